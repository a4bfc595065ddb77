"""The one part of the build pyproject.toml cannot say alone: alembic's scripts live in
migrations/ at the top of the repository and install as jackpot_grpc.migrations, inside
the package, so an installed wheel migrates (`make wheel-check` runs them from one).
Everything else about the build is in pyproject.toml."""

from setuptools import find_packages, setup

# Import name -> directory. Subpackages follow their parent (migrations/versions).
MAPPED = {"jackpot": "generated/jackpot", "jackpot_grpc.migrations": "migrations"}

setup(
    packages=[
        *find_packages(".", include=["jackpot_grpc", "jackpot_grpc.*"]),
        *find_packages("generated", include=["jackpot", "jackpot.*"]),
        "jackpot_grpc.migrations",
        "jackpot_grpc.migrations.versions",
    ],
    package_dir=MAPPED,
)
