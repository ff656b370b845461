"""Fixtures for the packaging tests: build tools, and the packages built once per run.

The tests that build, install or remove packages need root (they install their own
build tools with apt-get and really install the packages on this machine); without
root they are skipped. The static checks in test_static.py run as anyone.
"""

import pytest

from . import helpers

# Debian packages the packaging tests use: building and linting both packages, the RPM
# scratch root (busybox) and offline dependency resolution (dnf, createrepo-c), the
# clean-chroot test (piuparts, mmdebstrap), the man-page check, and the runtime
# dependencies of quiesce and the server the install test freezes.
BUILD_TOOLS = [
    "debhelper", "dh-python", "python3-configargparse", "dpkg-dev", "lintian",
    "rpm", "rpmlint", "dnf", "createrepo-c", "busybox-static",
    "piuparts", "mmdebstrap", "debian-archive-keyring",
    "man-db", "groff-base", "devscripts",
    "mariadb-server", "mariadb-client",
]


@pytest.fixture(scope="session")
def root():
    if not helpers.is_root():
        pytest.skip("packaging tests install real packages: run them as root")


@pytest.fixture(scope="session")
def build_tools(root):
    helpers.ensure_apt_packages(BUILD_TOOLS)


@pytest.fixture(scope="session")
def debs(build_tools, tmp_path_factory):
    """The .deb of the tree, and a rebuilt newer version whose conffile changed."""
    first = helpers.build_deb(str(tmp_path_factory.mktemp("deb-current")))
    newer = helpers.build_deb(str(tmp_path_factory.mktemp("deb-newer")),
                              version=first["version"] + "+pkgtest1",
                              config_append="# Added by the upgrade test build.\n")
    return {"current": first, "newer": newer}


@pytest.fixture(scope="session")
def rpms(build_tools, tmp_path_factory):
    """The RPM of the tree, and a rebuilt newer release whose config file changed."""
    first = helpers.build_rpm(str(tmp_path_factory.mktemp("rpm-current")))
    newer = helpers.build_rpm(str(tmp_path_factory.mktemp("rpm-newer")), release="2",
                              config_append="# Added by the upgrade test build.\n")
    return {"current": first, "newer": newer}
