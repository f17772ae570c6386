from gpunet.cli import app

app(prog_name="gpunet")
