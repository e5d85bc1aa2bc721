"""Regenerate docs/configuration.md from edge_node.config.SETTINGS: python docs/gen_settings.py"""

from pathlib import Path

from edge_node.config import SETTINGS

HEADER = """# Node settings

Every setting has a default, can be set in the TOML file (`<data-dir>/edge-node.toml`,
or `--config FILE`) and overridden by an environment variable `EDGE_NODE_<NAME>`
(upper case). Precedence, lowest first: default, TOML file, environment, command-line
option. Unknown names and wrong types are refused with a clear message.
`edge-node config show` prints the values in force.

Example `edge-node.toml`:

```toml
center_id = "ISB-01"
host = "0.0.0.0"
port = 8080
no_show_grace_minutes = 10
```

| setting | environment variable | default | meaning |
|---|---|---|---|
"""


def main() -> None:
    """Write the table."""
    rows = [f"| `{s.name}` | `EDGE_NODE_{s.name.upper()}` | `{s.default!r}` | {s.help} |"
            for s in SETTINGS]
    path = Path(__file__).with_name("configuration.md")
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
