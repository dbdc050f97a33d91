#!/bin/bash
# usage: arm.sh ARM SET [SEED]   (ARM: G|GT; SET: S1|S3|LV|AT)   rule: rule.md here.
# The sets and arms are those of ../uncertainty_of_shown/arm.sh; runs go to runs/gap.
OUT=runs/gap exec bash "$(dirname "$0")/../uncertainty_of_shown/arm.sh" "$@"
