"""Azure ML SDK v1 (azureml-core): the SDK import, sign-in, the workspace, and the SDK's errors as one line.

The tutorial's SDK, and the default of every script's --sdk. common.py holds what both SDKs share; v2.py is SDK v2.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import common


def import_sdk():
    """Import azureml.core, or say how to install it."""
    try:
        import azureml.core
    except ImportError as e:
        raise common.AmlError(f"the Azure ML SDK (azureml-core) is not installed for {sys.executable} "
                              f"({e.name} missing): run `make venv` (or pip install 'trainjob[azure]')") from None
    return azureml.core


def make_auth(args):
    """The SDK authentication object for --auth. Built with an explicit cloud, so no cloud-metadata download."""
    import_sdk()
    from azureml.core import authentication as a

    if args.auth == "cli":
        return a.TokenAuthentication(_AzureCliToken(), cloud=args.cloud)
    if args.auth == "interactive":
        return a.InteractiveLoginAuthentication(tenant_id=args.tenant_id, cloud=args.cloud)
    if args.auth == "msi":
        return a.MsiAuthentication(cloud=args.cloud)
    names = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise common.AmlError(f"--auth sp needs the environment variables {', '.join(missing)}")
    return a.ServicePrincipalAuthentication(tenant_id=os.environ[names[0]], service_principal_id=os.environ[names[1]],
                                            service_principal_password=os.environ[names[2]], cloud=args.cloud)


class _AzureCliToken:
    """Tokens from `az account get-access-token` (azure-identity's AzureCliCredential), cached until near expiry.

    The SDK's own AzureCliAuthentication needs azure-cli installed in this venv; this only needs `az` on PATH.
    """

    def __init__(self):
        self._cache: dict[str, tuple[str, float]] = {}

    def __call__(self, resource: str) -> str:
        token, expires = self._cache.get(resource, ("", 0.0))
        if time.time() < expires - 300:
            return token
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import AzureCliCredential, CredentialUnavailableError
        from azureml._vendor.azure_cli_core.auth.util import resource_to_scopes

        # azure-identity also logs each failure as a warning; the one-line error below says it all.
        logging.getLogger("azure.identity").setLevel(logging.ERROR)
        try:
            got = AzureCliCredential().get_token(*resource_to_scopes(resource))
        except CredentialUnavailableError as e:
            if "not found" in str(e).lower() or "not installed" in str(e).lower():
                raise common.NotSignedIn("the Azure CLI (`az`) is not on PATH: install it and run `az login` "
                                  "(or pass --auth interactive)") from None
            raise common.NotSignedIn("not signed in to Azure: run `az login` (then `az account set --subscription ID` "
                              "if you have several)") from None
        except ClientAuthenticationError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise common.NotSignedIn(f"Azure sign-in failed ({first}): run `az login` again") from None
        self._cache[resource] = (got.token, float(got.expires_on))
        return got.token


def load_workspace(args):
    """The workspace named by the config file and flags, checked against the service."""
    c = common.coordinates(args)  # before the slow SDK import: a missing config is reported at once
    core = import_sdk()
    auth = make_auth(args)
    if not (args.subscription_id or args.resource_group or args.workspace_name):
        # The tutorial's way; the path is explicit so a config.json in a parent folder is never picked up.
        return core.Workspace.from_config(path=args.config, auth=auth)
    return core.Workspace.get(c["workspace_name"], auth=auth, subscription_id=c["subscription_id"],
                              resource_group=c["resource_group"], cloud=args.cloud)


def no_dataprep_telemetry() -> None:
    """Keep --dry-run off the network: the first FileDataset starts azureml-dataprep's Rust engine, which sends usage
    telemetry to dc.services.visualstudio.com (and waits ~3 s at exit when it cannot). The mode the SDK uses for
    high-business-impact workspaces sends none; that switch is a module global (azureml-dataprep 5.5)."""
    from azureml.dataprep.api import _rslex_executor

    _rslex_executor.HBI_MODE = True


def offline_workspace(args):
    """A Workspace object built without any service call, for --dry-run and tests. Labelled values when no config."""
    core = import_sdk()
    from azureml.core.authentication import TokenAuthentication

    no_dataprep_telemetry()
    c = common.coordinates(args, required=False)
    source = args.config if c else "offline (no workspace config: labels, not a real workspace)"
    c = c or {"subscription_id": "dry-run-subscription", "resource_group": "dry-run-resource-group",
              "workspace_name": "dry-run-workspace"}

    def no_token(resource):
        raise AssertionError(f"--dry-run asked for a token ({resource}): an SDK call reached for the service")

    ws = core.Workspace(c["subscription_id"], c["resource_group"], c["workspace_name"],
                        auth=TokenAuthentication(no_token, cloud=args.cloud), _disable_service_check=True)
    return ws, {**c, "source": source}


@common.sdk_errors
def user_error(e: Exception) -> common.AmlError | None:
    """azureml-core's sign-in failures and its user errors (workspace, compute) as one line; None for anything else."""
    try:
        from azureml.exceptions import (
            AuthenticationException,
            ComputeTargetException,
            UserErrorException,
            WorkspaceException,
        )
    except ImportError:
        return None
    if isinstance(e, AuthenticationException):
        return common.sign_in_failed(e)
    if isinstance(e, (UserErrorException, WorkspaceException, ComputeTargetException)):
        return common.service_refused(e)
    return None
