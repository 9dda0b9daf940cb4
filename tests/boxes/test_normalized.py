import torch

from shared.boxes.normalized import centre_size_to_corners, corners_to_centre_size, denormalize_boxes, normalize_boxes


def test_normalize_and_back_is_the_identity():
    boxes = torch.tensor([[2.0, 3.0, 4.0, 8.0, 9.0, 12.0], [0.0, 0.0, 0.0, 16.0, 8.0, 32.0]])
    normalised = normalize_boxes(boxes, (16, 8, 32))
    torch.testing.assert_close(normalised[1], torch.tensor([0.5, 0.5, 0.5, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(normalised[0], torch.tensor([5 / 16, 6 / 8, 8 / 32, 6 / 16, 6 / 8, 8 / 32]))
    torch.testing.assert_close(denormalize_boxes(normalised, (16, 8, 32)), boxes)


def test_corner_conversions_are_inverse():
    boxes = torch.rand(5, 6)
    torch.testing.assert_close(corners_to_centre_size(centre_size_to_corners(boxes)), boxes)
