"""make upload-data AML_SDK=v2: the folder really written to a blob service, Azurite on loopback.

Azurite is Microsoft's Azure Storage emulator (`make azurite` installs it; .ci/run does). It stands in for the
workspace's storage account only: the upload code, azure-storage-blob and the HTTP traffic are the real ones. The
datastore lookup (a service call) is replaced by a datastore entity built here; the loopback guard fails any other
connection.
"""

import os
from pathlib import Path

import pytest
from loopback import free_port, start_listening

ROOT = Path(__file__).resolve().parents[1]
AZURITE = ROOT / "build" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented development account (public, the same in every copy of Azurite).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")


@pytest.fixture(scope="module")
def upload_data(aml):
    pytest.importorskip("azure.ai.ml")
    return aml.upload_data


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite's blob service on a free loopback port; its URL. Not installed: skip, or fail in CI."""
    if not AZURITE.exists():
        message = f"Azurite is not installed ({AZURITE}): run `make azurite`"
        if os.environ.get("TRAINJOB_REQUIRE_SERVERS") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = free_port()
    folder = tmp_path_factory.mktemp("azurite")
    proc = start_listening([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                            str(folder), "--skipApiVersionCheck", "--silent"], port, folder / "azurite.log", "Azurite",
                           timeout=60)
    yield f"http://127.0.0.1:{port}/{ACCOUNT}"
    proc.kill()  # its data is throwaway; a SIGTERM'd Azurite takes over 10 s to close its connections
    proc.wait(timeout=10)


def test_the_folder_lands_under_datasets_cifar10_byte_for_byte_and_again_on_a_rerun(upload_data, azurite, tmp_path,
                                                                                   loopback_only, capsys):
    from azure.storage.blob import ContainerClient
    from datagen import write_image_folders

    src = write_image_folders(tmp_path / "photos", per_class_train=3, per_class_test=1)
    (src / "train" / "cat" / "nested").mkdir()
    (src / "train" / "cat" / "nested" / "extra.png").write_bytes((src / "train" / "cat").iterdir().__next__()
                                                                 .read_bytes())
    container = ContainerClient(azurite, "azureml-blobstore-test", credential={"account_name": ACCOUNT,
                                                                              "account_key": KEY})
    container.create_container()
    files = upload_data.files_to_upload(str(src), "datasets/cifar10/")
    assert len(files) == 13 and all(name.startswith("datasets/cifar10/") for _, name in files)

    sent = upload_data.upload(container, files, workers=4)
    assert sent == sum(p.stat().st_size for p, _ in files)
    assert "13/13 files" in capsys.readouterr().out
    expected = {f"datasets/cifar10/{p.relative_to(src).as_posix()}": p.read_bytes() for p, _ in files}
    assert {b.name for b in container.list_blobs()} == set(expected)
    for name, content in expected.items():
        assert container.download_blob(name).readall() == content

    # A rerun after a change overwrites in place: the same names, the new bytes.
    changed = files[0][0]
    changed.write_bytes(changed.read_bytes() + b"changed")
    upload_data.upload(container, files, workers=4)
    assert container.download_blob(files[0][1]).readall().endswith(b"changed")
    assert len(list(container.list_blobs())) == 13


def test_a_refused_upload_names_the_file_and_the_role_it_needs(upload_data, azurite, tmp_path, loopback_only):
    """A wrong account key: Azurite refuses the request (403) as Azure Storage does."""
    from azure.storage.blob import ContainerClient

    (tmp_path / "a.bin").write_bytes(b"x")
    wrong = ContainerClient(azurite, "azureml-blobstore-test", credential={"account_name": ACCOUNT,
                                                                          "account_key": KEY[::-1]})
    with pytest.raises(upload_data.common.AmlError, match=r"could not upload .*a\.bin to datasets/x/a\.bin .*"
                       "Storage Blob Data Contributor"):
        upload_data.upload(wrong, upload_data.files_to_upload(str(tmp_path), "datasets/x"))


def test_the_datastore_decides_the_account_url_and_the_credential(upload_data, no_network):
    """The datastore entities are the SDK's own, as ml_client.datastores.get(include_secrets=True) returns them."""
    from azure.ai.ml.entities import (
        AccountKeyConfiguration,
        AzureBlobDatastore,
        AzureDataLakeGen2Datastore,
        SasTokenConfiguration,
    )
    from azure.identity import AzureCliCredential

    identity = AzureCliCredential()

    def store(credentials, **kw):
        return AzureBlobDatastore(name="workspaceblobstore", account_name="acct1", container_name="azureml-blobstore-1",
                                  credentials=credentials, **kw)

    keyed = upload_data.container_client(store(AccountKeyConfiguration(account_key=KEY)), identity)
    assert keyed.url == "https://acct1.blob.core.windows.net/azureml-blobstore-1"
    assert keyed.credential.account_name == "acct1" and keyed.credential.account_key == KEY
    sas = upload_data.container_client(store(SasTokenConfiguration(sas_token="sv=2024&sig=abc")), identity)
    assert "sig=abc" in sas.url
    china = upload_data.container_client(store(None, endpoint="core.chinacloudapi.cn"), identity)
    assert china.url.startswith("https://acct1.blob.core.chinacloudapi.cn/") and china.credential is identity
    lake = AzureDataLakeGen2Datastore(name="lake", account_name="acct1", filesystem="fs")
    with pytest.raises(upload_data.common.AmlError, match="not Azure Blob"):
        upload_data.container_client(lake, identity)
