/* Reads the KEY=VALUE file written by tests/testbed/testbed.sh. */
#ifndef RTB_TESTBED_ENV_H
#define RTB_TESTBED_ENV_H

#include "dicom/dicom.h"

/* Loads $RTB_TESTBED_ENV; returns 0, or -1 with a message on stderr. */
int testbed_load(void);
/* The value of KEY, or NULL. */
const char *testbed_get(const char *key);
int testbed_int(const char *key);
/* A peer for the AE whose settings are PREFIX_AET / PREFIX_PORT, calling AE = SCU_AET. */
rtb_dicom_peer testbed_peer(const char *prefix);
/* mkdtemp under the testbed dir; returns a static buffer per call slot (0..7). */
const char *testbed_tmpdir(const char *name);
/* Number of regular *.dcm files in dir. */
int count_dcm_files(const char *dir);

#endif
