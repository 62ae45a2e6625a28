"""A minimal CT data set built with python3-odil, for the specs whose peer or client is
odil (another DICOM stack than DCMTK): imported by the scripts they write, with this
directory on PYTHONPATH."""
import odil

CT = "1.2.840.10008.5.1.4.1.1.2"


def ct_dataset(sop, patient):
    """A CT Image Storage data set naming SOP Instance UID `sop` (none when None)."""
    ds = odil.DataSet()
    ds.add(odil.registry.SOPClassUID, [CT])
    if sop:
        ds.add(odil.registry.SOPInstanceUID, [sop])
    ds.add(odil.registry.StudyInstanceUID, ["1.2.3.4"])
    ds.add(odil.registry.SeriesInstanceUID, ["1.2.3.4.5"])
    ds.add(odil.registry.PatientID, [patient])
    ds.add(odil.registry.Modality, ["CT"])
    return ds
