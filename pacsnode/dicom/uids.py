"""The UIDs the node implements; docs/conformance.md is generated from these lists."""
from pydicom.uid import UID
from pynetdicom.sop_class import _STORAGE_CLASSES

# Our implementation identity (File Meta Information and association negotiation).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1471.1"
IMPLEMENTATION_VERSION_NAME = "PACSNODE_010"
# Root for UIDs the node itself generates.
UID_ROOT = "1.2.826.0.1.3680043.10.1471."

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"

# Transfer syntaxes accepted for storage, kept byte for byte as received.
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    DEFLATED_EXPLICIT_VR_LE,
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # High-Throughput JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.202",  # High-Throughput JPEG 2000 with RPCL (Lossless Only)
    "1.2.840.10008.1.2.4.203",  # High-Throughput JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.101",  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1
    "1.2.840.10008.1.2.4.104",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video
    "1.2.840.10008.1.2.4.105",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video
    "1.2.840.10008.1.2.4.106",  # MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile / Level 5.1
    "1.2.840.10008.1.2.4.108",  # HEVC/H.265 Main 10 Profile / Level 5.1
)

# Syntaxes offered for query/retrieve and verification (identifiers only).
QUERY_TRANSFER_SYNTAXES: tuple[str, ...] = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE)

VERIFICATION = "1.2.840.10008.1.1"

# Query/Retrieve information models: (name, root level set).
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

QR_MODELS: dict[str, tuple[str, str]] = {
    PATIENT_ROOT_FIND: ("PATIENT", "C-FIND"),
    PATIENT_ROOT_MOVE: ("PATIENT", "C-MOVE"),
    PATIENT_ROOT_GET: ("PATIENT", "C-GET"),
    STUDY_ROOT_FIND: ("STUDY", "C-FIND"),
    STUDY_ROOT_MOVE: ("STUDY", "C-MOVE"),
    STUDY_ROOT_GET: ("STUDY", "C-GET"),
}

# Every storage SOP class pynetdicom knows (keyword -> UID).
STORAGE_SOP_CLASSES: dict[str, str] = {kw: str(uid) for kw, uid in sorted(_STORAGE_CLASSES.items())}


def uid_name(uid: str) -> str:
    """Human name of a UID from pydicom's dictionary, or the UID itself."""
    name = UID(uid).name
    return name or uid
