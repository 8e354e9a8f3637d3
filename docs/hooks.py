"""mkdocs hook: the CLI reference's usage lines read `diffworld <command>`.

The typer app is unnamed (its name comes from the console script), so the generated usage lines
would start with a bare command; naming it here, before the pages render, fixes that.
"""


def on_config(config):
    from diffworld.cli import app

    app.info.name = "diffworld"
    return config
