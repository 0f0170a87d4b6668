pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.core",
    "tests.fixtures.netproxy",
    "tests.fixtures.jwks",
]
