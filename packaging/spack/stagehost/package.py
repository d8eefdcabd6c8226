# Spack recipe for stagehost. It builds from the source tarball that
# `scripts/release OUTDIR` writes (stagehost-<version>-source.tar.gz); the copy of this
# file in OUTDIR/spack/stagehost/ has that tarball's version and sha256 filled in.
# Until releases have a public address, put the tarball in a Spack mirror
# (`spack mirror add local file:///path/to/mirror`, tarball at
# stagehost/stagehost-<version>.tar.gz) and Spack finds it by its checksum.

from spack.package import *


class Stagehost(Package):
    """File staging for workflows: stagehost stages the files a task needs from URLs
    (file, http, ftp, zip, rsync, s3/gs/az) through provider plugins, and runs
    workflows on the local machine or on Slurm."""

    homepage = "https://stagehost.invalid"
    url = "https://stagehost.invalid/releases/stagehost-0.1.0-source.tar.gz"

    maintainers("stagehost")
    license("MIT OR Apache-2.0")

    # scripts/release adds: version("<version>", sha256="<sha256 of the source tarball>")
    # @VERSIONS@

    depends_on("rust@1.89:", type="build")
    depends_on("c", type="build")  # ring and zstd compile C

    def install(self, spec, prefix):
        # The binary into prefix/bin and the built-in plugins into
        # prefix/lib/stagehost/plugins, where the binary finds them.
        bash = which("bash")
        bash("scripts/install", "--prefix", prefix)
