"""autoseg as a node on the hospital network: DICOMweb (pull a study, push its DICOM-SEGs) and DIMSE
(a C-STORE receiver that segments each complete series and sends its SEG on)."""
