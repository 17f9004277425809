"""The environment a command starts in, read once: the contract's variables (settings.VARIABLES) and what they say
about this process (its rank under torchrun, whether it runs inside an Azure ML run, where MLflow is).

cli.run reads it when training starts, checks it (check) and hands it down (config, the watchdog, job, tracking,
MLflow): nothing else in a run looks these names up in os.environ. The other commands check it as they start
(cli.main).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from trainjob import contract, settings


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
        """Leniently: a bad value is found by check, so that a run can still say where failure.txt goes."""
        return cls({name: environ[name] for name in settings.NAMES if environ.get(name)})

    def check(self, command: str) -> "Environment":
        """Every variable's value, as `command` starts: UserError (one line, exit 2) for the first bad one."""
        settings.check(command, self.variables)
        return self

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
        def number(name: str) -> int:
            return settings.value(name, self.variables)

        return Distributed(rank=number(contract.ENV_RANK), world_size=number(contract.ENV_WORLD_SIZE),
                           local_rank=number(contract.ENV_LOCAL_RANK),
                           local_world_size=number(contract.ENV_LOCAL_WORLD_SIZE))
