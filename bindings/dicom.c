/* rtbackup.dicom.core: the DICOM binding's C half (datasets, SCU, SCP). The
 * module scripts require is rtbackup.dicom (scripts/lib/rtbackup/dicom.lua). */
#include "dicom_lua.h"

int luaopen_rtbackup_dicom_core(lua_State *L)
{
    lua_newtable(L);
    rtb_dicom_open_dataset(L);
    rtb_dicom_open_scu(L);
    rtb_dicom_open_scp(L);
    return 1;
}
