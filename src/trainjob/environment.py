"""The environment a training run starts in, read once: the contract's variables (contract.RUN_ENVIRONMENT) and what
they say about this process (its rank under torchrun, whether it runs inside an Azure ML run, where MLflow is).

cli.run reads it when the command starts and hands it down (config, the watchdog, job, tracking, MLflow): nothing
else in a run looks these names up in os.environ.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from trainjob import contract
from trainjob.errors import UserError


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Environment:
    variables: Mapping[str, str] = field(default_factory=dict)  # the contract's names that are set and not empty

    @classmethod
    def read(cls, environ: Mapping[str, str] = os.environ) -> "Environment":
        return cls({name: environ[name] for name in contract.RUN_ENVIRONMENT if environ.get(name)})

    def get(self, name: str) -> str | None:
        return self.variables.get(name)

    @property
    def azureml_run_id(self) -> str | None:
        """Set by Azure ML inside a run (SDK v1 and v2 jobs alike)."""
        return self.get(contract.ENV_AZUREML_RUN_ID)

    @property
    def is_main_process(self) -> bool:
        """Rank 0, or no torchrun at all; read leniently, for failure.txt before RANK itself is checked."""
        return self.get(contract.ENV_RANK) in (None, "0")

    def distributed(self) -> Distributed:
        """torchrun and Azure ML's PyTorch distribution both set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT."""
        def number(name: str, default: int) -> int:
            value = self.get(name)
            try:
                return int(value) if value else default
            except ValueError:
                raise UserError(f"environment variable {name} must be a whole number, got {value!r}") from None

        return Distributed(rank=number(contract.ENV_RANK, 0), world_size=number(contract.ENV_WORLD_SIZE, 1),
                           local_rank=number(contract.ENV_LOCAL_RANK, 0),
                           local_world_size=number(contract.ENV_LOCAL_WORLD_SIZE, 1))
