# Brain tissue summary from a T1w scan (img0) and its tissue label map (img1: 1 grey
# matter, 2 white matter): volumes, fractions, contrast, size and position, and a crop
# of the scan to the brain for viewing. Runs on the bundled example:
#   python -m vpcli example ex/
#   voxelprompt exec recipes/scripts/brain_tissue_summary.py \
#       ex/sub-mni152/anat/sub-mni152_T1w.nii.gz \
#       ex/sub-mni152/anat/sub-mni152_desc-tissue_dseg.nii.gz -o out/

# step 1
grey = select_labels(img1, 1)
white = select_labels(img1, 2)
brain = union(grey, white)
brain_ml = volume(brain)
grey_t1 = mean_intensity(img0, grey)
white_t1 = mean_intensity(img0, white)
read(brain_ml)
read(white_t1 / grey_t1)

# step 2
width_mm = extent(brain, "lr")
length_mm = extent(brain, "ap")
height_mm = extent(brain, "si")
centre = center_of_mass(brain)
output("brain tissue volume", brain_ml, "mL")
output("grey matter fraction", volume(grey) / brain_ml, "ratio")
output("white/grey matter T1w intensity ratio", white_t1 / grey_t1, "ratio")
output("brain width (left-right)", width_mm, "mm")
output("brain length (anterior-posterior)", length_mm, "mm")
output("brain height (superior-inferior)", height_mm, "mm")
output("brain centre of mass", centre, "scanner RAS mm")
save(brain, "brain tissue")
save(crop(img0, brain, 5.0), "T1w cropped to brain")
answer(f"Brain tissue measures {brain_ml:.0f} mL ({volume(grey) / brain_ml:.0%} grey matter), {width_mm:.0f} x {length_mm:.0f} x {height_mm:.0f} mm (left-right x anterior-posterior x superior-inferior).")
