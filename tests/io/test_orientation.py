"""Canonical orientation: any stored axis order and direction becomes the same array, and back."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from autoseg.io.formats import sitk_geometry
from autoseg.io.orientation import (
    Orientation,
    canonical_geometry,
    canonical_orientation,
    from_canonical,
    to_canonical,
)


def reference_image() -> sitk.Image:
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # (z, y, x)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 3.0))
    image.SetOrigin((-10.0, 20.0, 5.0))
    return image


def stored_differently(image: sitk.Image, order, flips) -> sitk.Image:
    """The same physical image with its axes permuted and flipped (what another scanner/converter writes)."""
    return sitk.Flip(sitk.PermuteAxes(image, list(order)), list(flips))


@pytest.mark.parametrize("order, flips", [
    (order, flips) for order in itertools.permutations(range(3))
    for flips in [(False, False, False), (True, True, False), (False, True, True)]])
def test_every_axis_order_and_flip_gives_back_the_reference_array(order, flips):
    reference = reference_image()
    expected = sitk.GetArrayFromImage(reference)
    stored = stored_differently(reference, order, flips)
    geometry = sitk_geometry(stored)
    orientation = canonical_orientation(geometry)
    array = sitk.GetArrayFromImage(stored)
    np.testing.assert_array_equal(to_canonical(array, orientation), expected)
    np.testing.assert_array_equal(from_canonical(to_canonical(array, orientation), orientation), array)
    canonical = canonical_geometry(geometry, orientation)
    assert canonical.shape == expected.shape and canonical.spacing == pytest.approx((3.0, 0.8, 0.7))
    assert canonical.sitk_origin == pytest.approx(reference.GetOrigin())
    assert canonical.sitk_direction == pytest.approx(reference.GetDirection())
    channels = np.stack([array, array + 1])  # leading axes (channels) are kept
    np.testing.assert_array_equal(to_canonical(channels, orientation)[1], expected + 1)
    assert Orientation.from_dict(orientation.to_dict()) == orientation


def test_ras_nifti_and_oblique_images():
    reference = reference_image()
    ras = sitk.Image(reference)
    ras.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # how RAS-ordered NIfTI reads in LPS
    assert canonical_orientation(sitk_geometry(ras)) == Orientation((0, 1, 2), (False, True, True))
    angle = np.radians(10)  # 10 degrees oblique about z: still the identity, nothing resampled
    oblique = sitk.Image(reference)
    oblique.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    assert canonical_orientation(sitk_geometry(oblique)).is_identity
    two_d = sitk.GetImageFromArray(np.zeros((5, 6), np.float32))
    assert canonical_orientation(sitk_geometry(two_d)).is_identity
