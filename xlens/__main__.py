from xlens.cli import app

app()
