"""Losses for detection: classification (focal, BCE with hard negatives), box regression, segmentation."""
