"""The SDK v2 sweep (make sweep-aml) and registering its best trial (make register-model --sweep), offline.

Built and read back through azure-ai-ml's own objects: the dry run's YAML is loaded with azure.ai.ml.load_job; the
sweep's trials are the SDK's Job entities made by its own conversion of run-history records (Job._from_rest_object),
and their metrics live in a real MLflow store (SQLite in a temporary folder). What stands in for Azure is only the
service: a client object whose jobs.get / jobs.list / jobs.create_or_update / models.create_or_update return or
record those objects. Each such stand-in is named in its test. No test reaches Azure: conftest's socket guard fails
any connection.
"""

import math
import re
from types import SimpleNamespace

import pytest
import yaml

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning",
                                        "ignore::FutureWarning")

# What Azure ML's hyperparameter tuning documentation allows (written out here, not imported from the scripts, so the
# test checks the scripts against the documentation): grid sampling takes only choice; Bayesian sampling only choice,
# uniform and quniform, and no early termination policy; random sampling every distribution.
DOCUMENTED = {"grid": {"choice"}, "bayesian": {"choice", "uniform", "quniform"},
              "random": {"choice", "randint", "uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal",
                         "lognormal", "qlognormal"}}
SEARCHED = re.compile(r"\$\{\{search_space\.(\w+)\}\}")


@pytest.fixture(autouse=True)
def _no_network(no_network):
    """Every test here runs behind conftest's socket guard."""


@pytest.fixture
def scripts(aml, monkeypatch, tmp_path):
    """The control scripts, run from a scratch folder (their YAML goes to ./build/aml) with no workspace config."""
    pytest.importorskip("azure.ai.ml")
    monkeypatch.chdir(tmp_path)
    return aml


def dry_sweep(aml, *argv: str):
    from azure.ai.ml import load_job

    aml.sweep.main(["--dry-run", "--config", "none.json", "--tag", "abc1234", *argv])
    path = aml.v2.BUILD_DIR / "sweep.yml"
    return load_job(path), yaml.safe_load(path.read_text())


def rest(job) -> dict:
    """The job as the SDK sends it (its REST body), less two spellings load_job changes and the service reads the
    same: the loader drops an environment reference's azureml: prefix, and reads no environment variables as {}."""
    body = job._to_rest_object().as_dict()
    trial = body["properties"]["trial"]
    trial["environmentId"] = trial["environmentId"].removeprefix("azureml:")
    trial["environmentVariables"] = trial.get("environmentVariables") or None
    return body


def checkpoint_dir(command: str) -> str:
    words = command.split()
    return words[words.index("--checkpoint_dir") + 1]


@pytest.mark.parametrize("sampling", ["random", "bayesian", "grid"])
def test_every_sampling_method_gets_a_search_space_azure_ml_documents_for_it(scripts, sampling):
    from trainjob.config import parse_args

    job, spec = dry_sweep(scripts, "--sampling", sampling)
    assert job.sampling_algorithm == sampling
    kinds = {name: d.type for name, d in job.search_space.items()}
    assert set(kinds.values()) <= DOCUMENTED[sampling], kinds
    assert set(SEARCHED.findall(job.trial.command)) == set(kinds), "each searched value reaches the trainer"
    assert (job.early_termination is None) == (sampling == "bayesian")
    words = job.trial.command.split()
    rate = "log10_learning_rate" if sampling == "bayesian" else "learning_rate"
    assert words[words.index(f"--{rate}") + 1] == f"${{{{search_space.{rate}}}}}"
    # The trainer reads each end of the searched range as the learning rate the sweep means: 1e-4 to 0.1.
    space = job.search_space[rate]
    ends = space.values if sampling == "grid" else [space.min_value, space.max_value]
    if sampling == "random":
        ends = [math.exp(v) for v in ends]  # LogUniform's bounds are natural logs
    rates = [parse_args(["--demo", f"--{rate}", str(v)], environ={}).learning_rate for v in ends]
    assert min(rates) == pytest.approx(1e-4) and max(rates) == pytest.approx(0.1)
    if sampling == "grid":
        assert ends == [0.0001, 0.001, 0.01, 0.1] and job.search_space["momentum"].values[::3] == [0.5, 0.99]


def test_the_sweep_yaml_is_the_job_submit_sends_with_its_experiment_name_and_tags(scripts, monkeypatch, capsys):
    """Stand-in for the service: a client whose jobs.create_or_update records the job it is given; the image lookup
    in the workspace's registry answers as the dry run does."""
    from azure.ai.ml import load_job

    job, spec = dry_sweep(scripts, "--sampling", "bayesian", "--experiment", "exp-7")
    assert (spec["experiment_name"], spec["display_name"]) == ("exp-7", "trainjob sweep exp-7")
    assert spec["tags"]["trainjob.sampling"] == "bayesian" and spec["tags"]["trainjob.run_key"]
    assert (job.experiment_name, job.tags) == ("exp-7", spec["tags"])

    sent = []
    client = SimpleNamespace(jobs=SimpleNamespace(
        create_or_update=lambda j: sent.append(j) or SimpleNamespace(name="sweep-1", studio_url="https://ml/s")))
    offline_image = scripts.submit.v2_image
    monkeypatch.setattr(scripts.v2, "ml_client", lambda args: client)
    monkeypatch.setattr(scripts.submit, "v2_image", lambda args, client=None: offline_image(args))
    scripts.sweep.main(["--config", "none.json", "--tag", "abc1234", "--sampling", "bayesian", "--experiment",
                        "exp-7"])
    [submitted] = sent
    assert type(submitted).__name__ == "SweepJob"
    loaded = load_job(scripts.v2.BUILD_DIR / "sweep.yml")
    assert rest(submitted) == rest(loaded)
    assert "submitted sweep sweep-1 (experiment exp-7)" in capsys.readouterr().out


def test_each_trial_checkpoints_into_a_folder_of_its_own(scripts):
    """Azure ML documents ${{name}} as the job's name without saying whether a sweep's output resolves it per trial,
    so the folder also carries the trial's sampled values, which the service writes into each trial's command."""
    for sampling in ("random", "bayesian", "grid"):
        job, _ = dry_sweep(scripts, "--sampling", sampling)
        assert job.outputs["checkpoints"].path.endswith("/${{name}}/")
        folder = checkpoint_dir(job.trial.command)
        assert folder.startswith("${{outputs.checkpoints}}/")
        assert set(SEARCHED.findall(folder)) == set(job.search_space), "every sampled value names the folder"

        def trial(values: dict, folder=folder) -> str:  # the service's substitution: ${{search_space.X}} -> value
            return SEARCHED.sub(lambda m: str(values[m.group(1)]), folder)

        names = list(job.search_space)
        first, second = dict.fromkeys(names, 0.5), {**dict.fromkeys(names, 0.5), names[0]: 0.25}
        assert trial(first) != trial(second), "two trials, two folders"
        assert trial(first) == trial(dict(first)), "a restarted trial finds its own checkpoints"


def test_the_trainer_takes_the_learning_rate_as_its_log10_but_not_both(tmp_path):
    from cli_runner import assert_user_error, run_train

    from trainjob.config import parse_args

    assert parse_args(["--demo", "--log10_learning_rate", "-2.5"], environ={}).learning_rate == pytest.approx(
        10 ** -2.5)
    both = run_train("--demo", "--learning_rate", "0.01", "--log10_learning_rate", "-2", "--output_dir", tmp_path)
    assert_user_error(both, "--learning_rate and --log10_learning_rate", "pass one of them")
    nan = run_train("--demo", "--log10_learning_rate", "nan", "--output_dir", tmp_path)
    assert_user_error(nan, "--log10_learning_rate must be between -10 and 1")


def test_a_trial_budget_reaches_every_trial_and_the_trial_timeout_sits_above_it(scripts, capsys):
    from trainjob.config import parse_args

    job, spec = dry_sweep(scripts, "--trial_budget", "600", "--", "--recipe", "fast")
    timeout = job.limits.trial_timeout  # the SweepJob as load_job reads the YAML back
    assert spec["limits"]["trial_timeout"] == timeout
    assert 600 * 1.03 + 300 <= timeout <= job.limits.timeout, "room for the node to start the trial, within the sweep"
    words = job.trial.command.split()
    assert words[words.index("--time_budget") + 1] == "600" and "--epochs" not in words
    assert spec["tags"]["trainjob.trial_budget"] == "600"
    assert "each trial 600 s, timeout" in capsys.readouterr().out
    # The trainer reads the trial's flags as a 600 s budget for the fast recipe.
    flags = [w for w in words[1:] if "${{" not in w]
    cfg = parse_args(["--demo", *flags[flags.index("--recipe"):]], environ={})
    assert (cfg.recipe, cfg.time_budget) == ("fast", 600.0)
    plain, _ = dry_sweep(scripts)
    assert plain.limits.trial_timeout is None and "--time_budget" not in plain.trial.command


def test_a_trial_budget_is_refused_with_epochs_or_beyond_the_sweeps_own_timeout(scripts, capsys):
    import common

    def refused(*argv: str) -> str:
        code = common.run_main(scripts.sweep.main, ["--dry-run", "--config", "none.json", "--tag", "abc1234", *argv])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    assert "leave --epochs out" in refused("--trial_budget", "600", "--", "--recipe", "fast", "--epochs", "4")
    assert "raise --timeout-minutes" in refused("--trial_budget", "3600", "--timeout-minutes", "30")
    assert "positive number of seconds" in refused("--trial_budget", "-1")


# --- register the best trial --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_trials(tmp_path_factory):
    """A real MLflow store with four trial runs: the job name of an Azure ML trial is its MLflow run id."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
    experiment = runs.create_experiment("day1-experiment-data")
    ids = {}
    for label, accuracies in (("good", [0.30, 0.61]), ("best-then-worse", [0.70, 0.52]), ("best", [0.40, 0.66]),
                              ("no-metric", [])):
        run_id = runs.create_run(experiment).info.run_id
        for step, value in enumerate(accuracies):
            runs.log_metric(run_id, "test_accuracy", value, step=step)
        ids[label] = run_id
    return runs, ids


def stand_in_workspace(sweep, statuses: dict):
    """Stand-in for the service: jobs.get returns `sweep` (a SweepJob), jobs.list(parent_job_name=...) the trials
    as the SDK makes them from run-history records, models.create_or_update records the model."""
    from azure.ai.ml._restclient.runhistory.models import Run
    from azure.ai.ml.entities import Job

    trials = [Job._from_rest_object(Run(run_id=name, status=status, experiment_id="day1-experiment-data"))
              for name, status in statuses.items()]
    registered = []

    def create_or_update(model):
        registered.append(model)
        return SimpleNamespace(name=model.name, version="3")

    jobs = SimpleNamespace(get=lambda name: sweep if name == "sweep-1" else SimpleNamespace(type="command"),
                           list=lambda parent_job_name: list(trials) if parent_job_name == "sweep-1" else [])
    return SimpleNamespace(jobs=jobs, models=SimpleNamespace(create_or_update=create_or_update)), registered


def test_register_model_picks_the_completed_trial_with_the_best_primary_metric(scripts, mlflow_trials, monkeypatch,
                                                                             capsys):
    runs, ids = mlflow_trials
    sweep, _ = dry_sweep(scripts)  # the SweepJob as load_job makes it: objective test_accuracy, maximize
    statuses = {ids["good"]: "Completed", ids["best-then-worse"]: "Completed", ids["best"]: "Completed",
                ids["no-metric"]: "Completed", "a-failed-one": "Failed"}
    client, registered = stand_in_workspace(sweep, statuses)
    # The last value logged counts, as MLflow keeps it: 0.66 beats a trial that peaked at 0.70 and ended at 0.52.
    assert scripts.register_model.best_trial(client, "sweep-1", runs) == (ids["best"], "test_accuracy", 0.66)
    sweep.objective.goal = "minimize"
    assert scripts.register_model.best_trial(client, "sweep-1", runs)[0] == ids["best-then-worse"]
    sweep.objective.goal = "maximize"

    monkeypatch.setattr(scripts.v2, "ml_client", lambda args: client)
    monkeypatch.setattr(scripts.register_model, "mlflow_runs", lambda client: runs)
    scripts.register_model.main(["--sweep", "sweep-1", "--name", "cifar10-net"])
    [model] = registered
    assert model.path == f"azureml://jobs/{ids['best']}/outputs/artifacts/paths/outputs/model.pt"
    assert (model.name, model.type) == ("cifar10-net", "custom_model")
    assert model.tags == {"trainjob.job": ids["best"], "trainjob.file": "model.pt", "trainjob.sweep": "sweep-1",
                          "trainjob.test_accuracy": "0.66"}
    out = capsys.readouterr().out
    assert f"trial {ids['best']} has test_accuracy 0.66, the best" in out and "registered model cifar10-net" in out


def test_register_model_refuses_what_it_cannot_register_with_one_line(scripts, mlflow_trials, monkeypatch, capsys):
    import common

    runs, ids = mlflow_trials
    sweep, _ = dry_sweep(scripts)
    client, registered = stand_in_workspace(sweep, {ids["no-metric"]: "Completed", ids["best"]: "Running"})
    monkeypatch.setattr(scripts.v2, "ml_client", lambda args: client)
    monkeypatch.setattr(scripts.register_model, "mlflow_runs", lambda client: runs)
    main = scripts.register_model.main
    cases = [(["--sweep", "sweep-1"], "has no Completed trial that logged test_accuracy"),
             (["--sweep", "sweep-1", "--trial", ids["best"]], "is not a Completed trial of sweep sweep-1"),
             (["--sweep", "a-command-job"], "is a command job, not a sweep: pass it as --job"),
             (["--trial", "t1", "--job", "j1"], "--trial names a trial of a sweep"),
             (["--sweep", "sweep-1", "--dry-run"], "a dry run cannot read sweep sweep-1's trials")]
    for argv, phrase in cases:
        assert common.run_main(main, argv) == 2, argv
        err = capsys.readouterr().err
        assert phrase in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert registered == []


def test_register_model_dry_run_of_a_named_trial_writes_a_model_load_model_reads(scripts, capsys):
    from azure.ai.ml import load_model

    scripts.register_model.main(["--dry-run", "--sweep", "sweep-1", "--trial", "sweep-1_3"])
    out = capsys.readouterr().out
    assert "nothing sent" in out and "not checked offline: that sweep-1_3 is a Completed trial of sweep-1" in out
    model = load_model(scripts.v2.BUILD_DIR / "model.yml")
    assert model.path == "azureml://jobs/sweep-1_3/outputs/artifacts/paths/outputs/model.pt"
    assert (model.tags["trainjob.job"], model.tags["trainjob.sweep"]) == ("sweep-1_3", "sweep-1")
