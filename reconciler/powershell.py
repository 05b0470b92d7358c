"""The credential command for Windows PowerShell: the same command, written so PowerShell passes it on verbatim. Pure.

The Linux/macOS form (render.credential_hint) is a POSIX shell line. PowerShell parses a command line
by its own rules, and three of them matter here:

- a bare `--` is PowerShell's own token (end of parameters), not an argument it always hands to a native
  command; quoted, `'--'` is a plain string that kubectl and runai receive as `--`;
- in a single-quoted string nothing is expanded (`$_`, `$x`, backticks, `?`, `,`, `@` are literal) and
  the only escape is a doubled quote (`''`); a bare `,` would make an array, a bare `@` a splat;
- `-match` is a regular expression, so the seed's `Where-Object {$_ -match "lab?token"}` looks for
  "latoken" or "labtoken" and never finds the `lab?token=` line: `Select-String -SimpleMatch` matches
  the text itself, as `grep` does for a basic pattern without special characters.
"""

from __future__ import annotations

from reconciler.models import Environment, Project


def quote(text: str) -> str:
    """`text` as a PowerShell single-quoted (verbatim) string."""
    return "'" + text.replace("'", "''") + "'"


def credential_hint_powershell(project: Project, workspace: str, environment: Environment) -> str:
    """The command that prints the workspace's password or token, for Windows PowerShell."""
    credentials = environment.spec.credentials
    if project.spec.hints == "runai":
        if credentials.file is not None:
            return f"runai exec {workspace} -p {project.name} '--' cat {quote(credentials.file)}"
        command = f"runai logs {workspace} -p {project.name}"
    else:
        if credentials.file is not None:
            return f"kubectl -n {project.namespace} exec deploy/{workspace} '--' cat {quote(credentials.file)}"
        command = f"kubectl -n {project.namespace} logs deploy/{workspace}"
    assert credentials.log_pattern is not None
    return f"{command} | Select-String -SimpleMatch -Pattern {quote(credentials.log_pattern)}"
