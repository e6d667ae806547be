"""Lightning plugins and callbacks (the only Lightning code outside module.py, data/datamodule.py and cli.py)."""
