"""The contract's environment variables are checked once, as each command starts: a bad value is one line naming
the variable, the value and the fix, exit 2, before any work; every value Azure ML sets passes. The real CLI."""


import pytest
from cli_runner import assert_user_error, cli_env, run_torchrun, run_train

from trainjob import contract, settings
from trainjob.errors import UserError

# Each command with arguments it would otherwise act on (or fail on for another reason): only the variable stops it.
COMMANDS = {
    "train": ["--demo", "--epochs", "1"],
    "predict": ["predict", "model.pt", "cat.png"],
    "evaluate": ["evaluate", "model.pt", "data"],
    "export": ["export", "model.pt"],
    "serve": ["serve", "model.pt"],
    "weights": ["weights", "list"],
}
# What Azure ML (a v2 command job, a PyTorch distribution, an online endpoint) and the image set: all good values.
AZURE = {
    "DATA_PATH": "/mnt/azureml/cr/j/abc/cap/data-capability/wd/INPUT_data", "OUTPUT_DIR": "/outputs",
    "TRAINJOB_CACHE_DIR": "/tmp/trainjob-cache", "TRAINJOB_WEIGHTS_DIR": "/opt/trainjob/weights",
    "AZUREML_RUN_ID": "sincere_apple_x7k2m9", "MLFLOW_RUN_ID": "sincere_apple_x7k2m9",
    "MLFLOW_TRACKING_URI": "azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/0000/resourceGroups/rg/"
                           "providers/Microsoft.MachineLearningServices/workspaces/ws",
    "MLFLOW_EXPERIMENT_NAME": "trainjob", "TRAINJOB_REVISION": "unknown", "TRAINJOB_SERVE_MAX_BYTES": "20000000",
    "AZUREML_MODEL_DIR": "/var/azureml-app/azureml-models/trainjob/3", "AZUREML_ENTRY_SCRIPT": "score.py",
    "AML_APP_ROOT": "/var/azureml-app", "WORKER_COUNT": "2", "WORKER_TIMEOUT": "0", "SCORING_TIMEOUT_MS": "60000",
    "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.4",
    "MASTER_PORT": "6105",
}


def test_every_variable_of_the_contract_has_a_row():
    named = {value for name, value in vars(contract).items() if name.startswith("ENV_")}
    assert named == set(settings.NAMES)


@pytest.mark.parametrize("command", settings.COMMANDS)
def test_what_azure_ml_sets_passes_every_command(command, tmp_path):
    model_dir = tmp_path / "azureml-models"
    model_dir.mkdir()
    settings.check(command, {**AZURE, "AZUREML_MODEL_DIR": str(model_dir)})
    assert settings.value("WORLD_SIZE", AZURE) == 4 and settings.value("WORKER_TIMEOUT", AZURE) == 0


@pytest.mark.parametrize("command", COMMANDS)
def test_a_garbage_serve_limit_stops_every_command_at_its_start(command, tmp_path):
    env = cli_env(TRAINJOB_SERVE_MAX_BYTES="20MB", OUTPUT_DIR=str(tmp_path / "o"))
    line = assert_user_error(run_train(*COMMANDS[command], env=env, cwd=tmp_path),
                             "TRAINJOB_SERVE_MAX_BYTES='20MB' is not a whole number", "in bytes", "or unset it")
    assert line.count("error:") == 1
    if command == "train":  # failure.txt says it too, and nothing was trained
        assert (tmp_path / "o" / "failure.txt").read_text().strip() == line
        assert not (tmp_path / "o" / "model.pt").exists()


@pytest.mark.parametrize("value, phrase", [
    ("-5", "'-5' is below 1"),
    ("0", "'0' is below 1"),
    ("1.5", "'1.5' is not a whole number"),
    ("\x1b[2J", "'\\x1b[2J' is not a whole number"),  # shown escaped, as any text from outside
])
def test_serve_refuses_a_limit_that_is_no_positive_number(value, phrase, tmp_path):
    result = run_train("serve", tmp_path / "model.pt", env=cli_env(TRAINJOB_SERVE_MAX_BYTES=value))
    assert_user_error(result, "TRAINJOB_SERVE_MAX_BYTES=" + phrase)
    assert "\x1b" not in result.stderr


@pytest.mark.parametrize("command", ["train", "predict"])
@pytest.mark.parametrize("variables, phrase", [
    ({"RANK": "first"}, "RANK='first' is not a whole number"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' is below 1"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
    ({"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "1"}, "LOCAL_RANK=1 is not below LOCAL_WORLD_SIZE=1"),
    ({"MASTER_PORT": "70000"}, "MASTER_PORT='70000' is outside 1 to 65535"),
    ({"WORKER_COUNT": "two"}, "WORKER_COUNT='two' is not a whole number"),
    ({"SCORING_TIMEOUT_MS": "-1"}, "SCORING_TIMEOUT_MS='-1' is below 1"),
])
def test_launcher_and_server_numbers_are_checked(command, variables, phrase, tmp_path):
    env = cli_env(OUTPUT_DIR=str(tmp_path / "o"), **variables)
    assert_user_error(run_train(*COMMANDS[command], env=env, cwd=tmp_path), phrase)


def test_a_tracking_uri_mlflow_cannot_use_stops_training_before_it_starts(tmp_path):
    """A typo in the scheme was a warning after the data had loaded; its password is never shown."""
    env = cli_env(MLFLOW_TRACKING_URI="htps://me:secret-pass@mlflow.example.com")
    result = run_train("--demo", "--epochs", "1", "--output_dir", tmp_path / "o", env=env)
    line = assert_user_error(result, "MLFLOW_TRACKING_URI='htps://***@mlflow.example.com' has a scheme MLflow does "
                             "not know (htps:)", "http://HOST:5000")
    assert "secret-pass" not in result.stdout + result.stderr + line
    assert not (tmp_path / "o" / "model.pt").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://u:p@mlflow.example.com/x", "file:///tmp/mlruns",
                                 "/tmp/mlruns", "mlruns", "sqlite:///mlflow.db", "postgresql+psycopg2://h/db",
                                 "databricks", "databricks://profile", "azureml://eastus.api.azureml.ms/mlflow/v1.0/x"])
def test_tracking_uris_mlflow_takes_pass(uri):
    assert settings.value(contract.ENV_MLFLOW_URI, {contract.ENV_MLFLOW_URI: uri}) == uri


@pytest.mark.parametrize("uri, phrase", [("http:///x", "names no host"), ("s3://bucket/x", "scheme MLflow does not")])
def test_tracking_uris_mlflow_refuses_fail(uri, phrase):
    with pytest.raises(UserError, match=phrase):
        settings.check("predict", {contract.ENV_MLFLOW_URI: uri})


def test_the_scoring_script_needs_the_model_its_variables_name(tmp_path):
    """Only where the model is loaded from them: train serve sets TRAINJOB_MODEL itself, and the image may carry
    an AZUREML_MODEL_DIR that predict never reads."""
    missing = {contract.ENV_SERVE_MODEL: str(tmp_path / "gone" / "model.pt")}
    with pytest.raises(UserError, match=r"TRAINJOB_MODEL='.*gone/model.pt' names nothing that exists"):
        settings.check("score", missing)
    settings.check("serve", missing)
    settings.check("predict", {contract.ENV_AZUREML_MODEL_DIR: str(tmp_path / "gone")})
    (tmp_path / "gone").mkdir()
    settings.check("score", {contract.ENV_AZUREML_MODEL_DIR: str(tmp_path / "gone")})


def test_an_unset_or_empty_variable_takes_its_default():
    assert settings.value(contract.ENV_SERVE_MAX_BYTES, {}) == contract.DEFAULT_SERVE_MAX_BYTES
    assert settings.value(contract.ENV_SERVE_MAX_BYTES, {contract.ENV_SERVE_MAX_BYTES: ""}) == \
        contract.DEFAULT_SERVE_MAX_BYTES
    assert settings.value(contract.ENV_SERVE_MAX_BYTES, {contract.ENV_SERVE_MAX_BYTES: " 200000 "}) == 200_000


def test_a_command_with_good_azure_values_runs(tmp_path):
    """The whole set at once, through the real CLI: `train weights list` starts and answers."""
    result = run_train("weights", "list", env=cli_env(**AZURE))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "efficientnet_lite0" in result.stdout


@pytest.mark.slow
def test_each_torchrun_rank_checks_its_environment(tmp_path):
    """Every rank reads the environment torchrun gives it and stops at its start, before joining the others."""
    result = run_torchrun("--demo", "--epochs", "1", "--output_dir", tmp_path / "o",
                          env=cli_env(TRAINJOB_SERVE_MAX_BYTES="lots"), timeout=300)
    assert result.returncode != 0
    stopped = [line for line in result.stderr.splitlines()
               if line.startswith("error: environment variable TRAINJOB_SERVE_MAX_BYTES='lots'")]
    # The first rank to stop makes torchrun end the other, which may not have got as far as saying so itself.
    assert stopped, result.stderr[-3000:]
    assert "exitcode  : 2" in result.stderr
    assert not (tmp_path / "o" / "model.pt").exists()
