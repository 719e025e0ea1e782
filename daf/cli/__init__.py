"""`daf`: the command line for DAF's pipelines (train, evaluate, compare, sweep, benchmark, package).

Pipeline commands (train, compare, sweep, benchmark) run through `daf.orchestrators`, so through Prefect flows:
without PREFECT_API_URL, Prefect starts its embedded server first (about 15-25 s). Each takes `--config PATH`
(YAML for the matching config class) and/or flags that override it; `--set KEY=VALUE` overrides any other field
(`--set learning_rate=3e-4`, `--set training.num_envs=8`). Results go to stdout (a table of the PipelineResult
and where the outputs went); progress, errors and Prefect warnings go to stderr.

Exit codes:
  0  success
  1  the pipeline failed (a required stage failed), the environment is unhealthy, a bundle is invalid,
     or an unexpected error (`--debug` shows its traceback)
  2  bad input: unreadable or invalid config, unknown mission or policy, a bad flag value
     (one `error: <message>` line on stderr, no traceback)
  3  partial: an optional stage failed; the other stages' outputs were written
  130, 143  stopped by SIGINT, SIGTERM (the result written so far is shown)

The package, by idea:
  application        the Typer app, its global options, the stdout and stderr consoles
  exits              exit codes: errors and pipeline results onto codes, the one `error:` line
  options            option types declared once; `pipeline_command`, the options every pipeline command shares
  configs            --config + flags + --set into a validated config; the --policy spelling
  input_checks       missions and policies checked before anything runs
  rendering          results on stdout: pipeline results, check tables, the evaluation table
  running            `run_with_progress`: one pipeline with progress, its result and its exit code
  progress           the progress bars (or lines) drawn from the flows' log records
  info_commands      missions, policies, check
  pipeline_commands  train, compare, sweep, benchmark
  evaluate_command   evaluate
  package_commands   package, validate-package

Imports inside functions: modules that load torch, mettagrid, scipy, Prefect, pydantic's config models or
packaging's requirement parser (daf.config, daf.missions, daf.policies, daf.comparison, daf.evaluation,
daf.packaging, daf.environment_checks, daf.orchestrators, ...) are imported by the commands that use them, after
their input checks, so that `daf --help`, `daf missions` and bad-input exits do not wait for them.
"""

from daf.cli.application import app
from daf.cli.configs import load_config
from daf.cli.evaluate_command import evaluate
from daf.cli.info_commands import check, missions, policies
from daf.cli.package_commands import package, validate_package_command
from daf.cli.pipeline_commands import benchmark, compare, sweep, train

# In the order `daf --help` lists them.
for command in (missions, policies, check, train, compare, sweep, benchmark, evaluate, package):
    app.command()(command)
app.command("validate-package")(validate_package_command)

__all__ = ["app", "load_config"]
