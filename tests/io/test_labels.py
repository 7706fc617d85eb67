"""Label rules of dataset.json: consecutive values, the ignore label, the network's classes."""

from pathlib import Path

import pytest

from autoseg.errors import AutosegInputError
from autoseg.io.dataset import parse_dataset_json
from autoseg.io.labels import class_values, foreground_values, ignore_value


def parse(labels):
    return parse_dataset_json({"channel_names": {"0": "MRI"}, "labels": labels, "file_ending": ".nii.gz"},
                              Path("/data"), "dataset.json")


def test_the_ignore_label_is_no_class():
    labels = {"background": 0, "anterior": 1, "posterior": 2, "ignore": 3}
    description = parse(labels)
    assert description.ignore_label == ignore_value(labels) == 3
    assert description.label_values == [0, 1, 2, 3]  # files may contain it
    assert class_values(labels) == [0, 1, 2] and description.num_classes == 3
    assert foreground_values(labels) == description.foreground_labels == [1, 2]
    plain = {"background": 0, "organ": 1}
    assert ignore_value(plain) is None and class_values(plain) == [0, 1] and parse(plain).num_classes == 2


@pytest.mark.parametrize("labels, message", [
    ({"background": 0, "ignore": 1, "organ": 2}, "label 'ignore' must have the highest value"),
    ({"background": 0, "ignore": 1}, "at least one foreground label besides 'ignore'"),
    ({"background": 0, "organ": 1, "ignore": 3}, "must be consecutive 0..2"),
])
def test_a_misplaced_ignore_label_is_one_line(labels, message):
    with pytest.raises(AutosegInputError, match=message):
        parse(labels)
