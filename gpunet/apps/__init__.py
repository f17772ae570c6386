"""What people run: the CLI, the web app, predictions, plots, export and the device check. Nothing outside apps
imports it."""
