from upres.cli.main import run

run()
