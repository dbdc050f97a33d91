"""Reading and writing scans and label maps (SimpleITK, DICOM series, DICOM-SEG, MetaImage checks),
atomic and staged writes, output-path checks, devices and CPU maths."""
