/* Shared by the rtbackup.dicom binding files (datasets, SCU, SCP). */
#ifndef RTB_DICOM_LUA_H
#define RTB_DICOM_LUA_H

#include <lauxlib.h>
#include <lua.h>

#include "dicom/dicom.h"

#define RTB_DATASET_MT "rtbackup.dicom.dataset"

/* Pushes an rtbackup error table for a DICOM error: kind, message, peer, status,
 * and for rejections reason/source/result. */
void rtb_dicom_push_error(lua_State *L, const rtb_dicom_error *err);
int rtb_dicom_raise(lua_State *L, const rtb_dicom_error *err);

/* Wraps a dataset in a userdata. Owned: freed by __gc. Borrowed (an item of a
 * sequence): `owner_idx` is the stack index of the owning userdata, kept alive
 * as long as the item is. */
void rtb_dicom_push_dataset(lua_State *L, rtb_ds *ds, int owner_idx);
rtb_ds *rtb_dicom_check_dataset(lua_State *L, int idx);
rtb_ds *rtb_dicom_test_dataset(lua_State *L, int idx);

/* Lends the dataset at idx to a job on another thread, instead of copying it: until
 * it is given back, every use from Lua raises ("the dataset is being sent"), and the
 * registry keeps it alive (*ref). Returns the tree, or NULL when it cannot be lent
 * (a sequence item, freed, or lent already): the caller copies it then. */
rtb_ds *rtb_dicom_lend_dataset(lua_State *L, int idx, int *ref);
void rtb_dicom_give_back_dataset(lua_State *L, int ref);
/* The tree of the dataset (or item) at idx when it is lent to a job now, else NULL. */
rtb_ds *rtb_dicom_lent_dataset(lua_State *L, int idx);

/* Builds a new dataset from a Lua table {Keyword = value, ...} (see dataset.c).
 * Raises on a bad keyword or value. The caller owns the result. */
rtb_ds *rtb_dicom_dataset_from_table(lua_State *L, int idx);
/* Fills `ds` from the table at idx (keys that are not keywords raise). */
void rtb_dicom_fill_dataset(lua_State *L, rtb_ds *ds, int idx);
/* Pushes {Keyword = value} for every element (sequences as lists of tables). */
void rtb_dicom_push_table(lua_State *L, rtb_ds *ds);

void rtb_dicom_ensure_init(lua_State *L);

void rtb_dicom_open_dataset(lua_State *L); /* adds dataset functions to the module table on top */
void rtb_dicom_open_scu(lua_State *L);
void rtb_dicom_open_scp(lua_State *L);

#endif
