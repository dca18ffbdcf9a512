"""Run under ``torchrun --nproc_per_node=2``: convert a recipe, record each rank's final weights and data shard."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from converters import convert
from converters.recipe import load_recipe
from converters.training.trainer import TrainCallback


class Record(TrainCallback):
    def __init__(self) -> None:
        self.seen = 0
        self.info: dict = {}

    def on_batch_end(self, trainer, stage, epoch, step, loss):
        if epoch == 0:
            self.seen += trainer.stages[stage].batch_size // trainer.dist.world_size

    def on_train_end(self, trainer):
        h = hashlib.sha256()
        for k, v in trainer.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        self.info = {"rank": trainer.dist.rank, "world": trainer.dist.world_size, "weights": h.hexdigest(),
                     "train_samples": len(trainer.y)}


if __name__ == "__main__":
    recipe, out, record_dir = sys.argv[1:4]
    rec = Record()
    result = convert(load_recipe(recipe), out, progress=False, callbacks=[rec])
    info = {**rec.info, "returned": str(result) if result is not None else None, "batches_samples": rec.seen}
    Path(record_dir, f"rank{info['rank']}.json").write_text(json.dumps(info))
