"""The dataset registry: MNIST and Fashion-MNIST, their files, digests, mirrors and class names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpunet.errors import GpunetError

NUM_CLASSES = 10
SPLIT_PREFIXES = ("train", "t10k")  # the file-name prefixes of the training and test splits
TEST_PREFIX = SPLIT_PREFIXES[1]


@dataclass(frozen=True)
class DataFile:
    name: str  # e.g. "train-images-idx3-ubyte"; mirrors serve it as name + ".gz"
    gz_sha256: str  # the canonical .gz as the mirrors serve it: checks a download
    gz_size: int  # bytes of that .gz
    sha256: str  # the decompressed IDX bytes, the identity of the data: checks a copy on disk
    size: int | None = None  # bytes of the decompressed IDX file: reading stops there (a gzip bomb is refused)


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    classes: tuple[str, ...]  # class index -> name
    mirrors: tuple[str, ...]  # base URLs, tried in order
    files: tuple[DataFile, ...]  # train images, train labels, test images, test labels
    system_dirs: tuple[Path, ...] = ()
    system_hint: str = ""  # how to install the system copy

    def urls(self, f: DataFile) -> list[str]:
        return [f"{mirror}{f.name}.gz" for mirror in self.mirrors]


# Sources of the digests and sizes, all four cross-checked:
# - MNIST: the decompressed and mirror .gz SHA-256 from ../shared/datasets/mnist/README.md; the .gz digests and
#   sizes are also those of tensorflow-datasets' url_checksums/mnist.txt (the storage.googleapis.com mirror).
# - Fashion-MNIST: .gz SHA-256 and sizes from tensorflow-datasets' url_checksums/fashion_mnist.txt; torchvision's
#   datasets/mnist.py pins the same files by MD5 (8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...). The
#   decompressed SHA-256 were computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1, whose .gz
#   are re-compressed (other gzip headers) but whose decompressed MD5s equal those other projects pin for the
#   upstream files (f4a8712d..., 9018921c..., 8181f547..., 15d48437...).
# The decompressed sizes follow from the IDX headers (16 + n*28*28 image bytes, 8 + n labels; MNIST's measured on
# the bundled data/mnist files).
# Never yann.lecun.com: it has refused downloads for years (torchvision issues 1938, 3549, 8568).
DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        name="mnist",
        title="MNIST handwritten digits",
        classes=tuple(str(d) for d in range(10)),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        files=(
            DataFile("train-images-idx3-ubyte", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                     9912422, "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
            DataFile("train-labels-idx1-ubyte", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                     28881, "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
            DataFile("t10k-images-idx3-ubyte", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                     1648877, "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
            DataFile("t10k-labels-idx1-ubyte", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                     4542, "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
        ),
    ),
    Dataset(
        name="fashion-mnist",
        title="Fashion-MNIST clothing (Zalando)",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
        # The project's own mirror (an S3 website endpoint: plain http only; the SHA-256 pins guard the content).
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=(
            DataFile("train-images-idx3-ubyte", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                     26421880, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47_040_016),
            DataFile("train-labels-idx1-ubyte", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                     29515, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_008),
            DataFile("t10k-images-idx3-ubyte", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                     4422102, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7_840_016),
            DataFile("t10k-labels-idx1-ubyte", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                     5148, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_008),
        ),
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        system_hint="apt-get install dataset-fashion-mnist (Debian, Ubuntu)",
    ),
)}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise GpunetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def class_names(dataset: str) -> list[str]:
    """Class index -> name, e.g. class_names('fashion-mnist')[9] == 'Ankle boot'."""
    return list(get_dataset(dataset).classes)


@dataclass
class Split:
    images: np.ndarray  # (n, 28, 28) uint8
    labels: np.ndarray  # (n,) uint8


