# Grey and white matter volumes from a tissue label map (1 grey matter, 2 white matter).
# Inputs: img0 = T1w scan, img1 = its tissue label map (e.g. the bundled example:
#   python -m vpcli example ex/
#   voxelprompt exec recipes/scripts/tissue_volumes.py \
#       ex/sub-mni152/anat/sub-mni152_T1w.nii.gz \
#       ex/sub-mni152/anat/sub-mni152_desc-tissue_dseg.nii.gz -o out/)

# step 1
grey = select_labels(img1, 1)
white = select_labels(img1, 2)
grey_ml = volume(grey)
white_ml = volume(white)
read(grey_ml)
read(white_ml)

# step 2
output("grey matter volume", grey_ml, "mL")
output("white matter volume", white_ml, "mL")
output("grey/white matter ratio", grey_ml / white_ml, "ratio")
save(grey, "grey matter")
save(white, "white matter")
answer(f"Grey matter {grey_ml:.1f} mL, white matter {white_ml:.1f} mL (ratio {grey_ml / white_ml:.2f}).")
