from gpunet.apps.cli import app

app(prog_name="gpunet")
