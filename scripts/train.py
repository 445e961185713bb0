"""Train one run: `python scripts/train.py mode=offline` (see conf/train.yaml and README)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from shiftlab.config import ShiftlabConfig, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(dict_cfg: DictConfig) -> None:
    # imported per run: under a parallel launcher (conf/hydra/launcher/) this process only composes and hands out
    # the runs, so it need not load torch; each worker process imports what its runs use
    from shiftlab.cli import user_errors
    from shiftlab.experiment.lifecycle import run
    from shiftlab.validation import validate

    with user_errors():
        cfg: ShiftlabConfig = validate(OmegaConf.to_object(dict_cfg))
        hydra_cfg = HydraConfig.get()
        # a finished run prints its closing summary (shiftlab/experiment/closing.py): findings, directory, report command
        run(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))


if __name__ == "__main__":
    main()
