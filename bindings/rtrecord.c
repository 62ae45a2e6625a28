/* rtbackup.rtrecord.core: rtrecord.beams_treatment_record(input) -> dataset, and
 * rtrecord.check(ds) -> list of problems. The Lua module scripts require is
 * rtbackup.rtrecord (scripts/lib/rtbackup/rtrecord.lua), which documents the
 * input table; this file only turns that table into rtb_rtrecord_input.
 *
 * Building is a few hundred microseconds of CPU, so it runs on the loop thread.
 * Strings are borrowed from the input table (kept on the stack for the call);
 * arrays live in userdata anchored in a table, so an error raised halfway
 * through leaks nothing. */
#include <math.h>
#include <string.h>

#include "dicom_lua.h"
#include "rtrecord/rtrecord.h"
#include "util.h"

int luaopen_rtbackup_dicom_core(lua_State *L);

typedef struct {
    lua_State *L;
    int anchor;      /* stack index of the table that keeps allocations alive */
    lua_Integer n_anchored;
    int keys;        /* stack index of the key strings table (see field) */
    char *chunk;     /* the arena alloc() carves from, and how much of it is used */
    size_t chunk_used, chunk_size;
    char path[128];  /* "beams[2].control_points[1]" */
} reader;

static int bad_field(reader *r, const char *key, const char *what)
{
    return rtb_lua_error_raise(r->L, "invalid", "%s%s%s %s", r->path, r->path[0] ? "." : "", key,
                               what);
}

/* Anchors the value on top of the stack (popping it). */
static void anchor(reader *r)
{
    lua_rawseti(r->L, r->anchor, ++r->n_anchored);
}

/* Zeroed memory that lives as long as the call. Carved from anchored chunks: a record
 * has two arrays per control point (MLC and jaws), and one userdata each made malloc
 * the largest cost of reading the input. */
enum { CHUNK = 4096 };

static void *alloc(reader *r, size_t size)
{
    if (size > CHUNK / 4) { /* large: its own block */
        void *p = lua_newuserdatauv(r->L, size, 0);
        memset(p, 0, size);
        anchor(r);
        return p;
    }
    size = size ? (size + 15) & ~(size_t)15 : 16; /* keeps every piece aligned */
    if (!r->chunk || r->chunk_size - r->chunk_used < size) {
        r->chunk = lua_newuserdatauv(r->L, CHUNK, 0);
        anchor(r);
        r->chunk_used = 0;
        r->chunk_size = CHUNK;
    }
    void *p = r->chunk + r->chunk_used;
    r->chunk_used += size;
    memset(p, 0, size);
    return p;
}

/* Pushes t[key] without metamethods (t is an absolute index) and returns its type.
 * Raw, because the builder keeps pointers to the strings it reads: a value an __index
 * function made up would be referenced by nothing once popped, and could be
 * collected before the builder reads it. check_keys() walks the raw table too. */
static int field(reader *r, int t, const char *key)
{
    /* The key as a Lua string, found by the address of its C literal: cheaper than
     * lua_pushstring's hashing, a few hundred times per record. */
    lua_State *L = r->L;
    if (lua_rawgetp(L, r->keys, key) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushstring(L, key);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, r->keys, key);
    }
    return lua_rawget(L, t);
}

/* Pushes the set {key = true, ...} of a known-keys list, made once per list and kept in
 * the registry under the list's address: a record checks every key of every control
 * point, and one table look-up beats comparing it with each known name. */
static void push_key_set(lua_State *L, const char *const *known)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, known) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_newtable(L);
    for (size_t i = 0; known[i]; i++) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, known[i]);
    }
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, known);
}

/* Rejects keys the builder does not know: a typo must not silently drop data. */
static void check_keys(reader *r, int t, const char *const *known)
{
    lua_State *L = r->L;
    push_key_set(L, known);
    int set = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        int ok = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_pushvalue(L, -1);
            ok = lua_rawget(L, set) != LUA_TNIL;
            lua_pop(L, 1);
        }
        if (!ok) {
            const char *k = luaL_tolstring(L, -1, NULL);
            rtb_lua_error_raise(L, "invalid", "%s%sunknown field '%s'", r->path,
                                r->path[0] ? ": " : "", k);
        }
    }
    lua_pop(L, 1);
}

static const char *get_string(reader *r, int t, const char *key)
{
    lua_State *L = r->L;
    switch (field(r, t, key)) {
    case LUA_TNIL:
        lua_pop(L, 1);
        return NULL;
    case LUA_TSTRING: {
        const char *s = lua_tostring(L, -1); /* the input table keeps it alive */
        lua_pop(L, 1);
        return s;
    }
    case LUA_TNUMBER: {
        const char *s = lua_tostring(L, -1); /* a new string: anchor it */
        anchor(r);
        return s;
    }
    default:
        bad_field(r, key, "must be a string");
        return NULL;
    }
}

static double get_number(reader *r, int t, const char *key)
{
    lua_State *L = r->L;
    int type = field(r, t, key);
    double v = NAN; /* NaN is how the builder spells "absent" */
    if (type == LUA_TNUMBER) {
        v = lua_tonumber(L, -1);
        if (!isfinite(v))
            bad_field(r, key, "must be a finite number");
    } else if (type != LUA_TNIL) {
        bad_field(r, key, "must be a number");
    }
    lua_pop(L, 1);
    return v;
}

static long get_integer(reader *r, int t, const char *key)
{
    lua_State *L = r->L;
    int type = field(r, t, key);
    long v = RTB_RTRECORD_NO_INT;
    if (type == LUA_TNUMBER) {
        lua_Integer i;
        if (!lua_isinteger(L, -1)) {
            double d = lua_tonumber(L, -1);
            if (d != floor(d) || fabs(d) > 2147483647.0)
                bad_field(r, key, "must be an integer");
            i = (lua_Integer)d;
        } else {
            i = lua_tointeger(L, -1);
        }
        v = (long)i;
    } else if (type != LUA_TNIL) {
        bad_field(r, key, "must be an integer");
    }
    lua_pop(L, 1);
    return v;
}

/* Pushes t[key] if it is a table (returns its index), nothing and 0 if nil. */
static int get_table(reader *r, int t, const char *key)
{
    int type = field(r, t, key);
    if (type == LUA_TTABLE)
        return lua_gettop(r->L);
    if (type != LUA_TNIL)
        bad_field(r, key, "must be a table");
    lua_pop(r->L, 1);
    return 0;
}

/* A list of numbers t[key] into a new anchored array; *n = 0 if absent. */
static double *get_numbers(reader *r, int t, const char *key, size_t *n)
{
    int list = get_table(r, t, key);
    *n = 0;
    if (!list)
        return NULL;
    size_t len = (size_t)lua_rawlen(r->L, list);
    double *v = alloc(r, len * sizeof *v);
    for (size_t i = 0; i < len; i++) {
        if (lua_rawgeti(r->L, list, (lua_Integer)i + 1) != LUA_TNUMBER)
            bad_field(r, key, "must be a list of numbers");
        v[i] = lua_tonumber(r->L, -1);
        if (!isfinite(v[i]))
            bad_field(r, key, "must be a list of finite numbers");
        lua_pop(r->L, 1);
    }
    lua_pop(r->L, 1);
    *n = len;
    return v;
}

static void get_pair(reader *r, int t, const char *key, double out[2])
{
    size_t n;
    double *v = get_numbers(r, t, key, &n);
    if (n == 0)
        return; /* stays NaN */
    if (n != 2)
        bad_field(r, key, "must be a pair {first, second}");
    out[0] = v[0];
    out[1] = v[1];
}

static void get_name(reader *r, int t, const char *key, rtb_rtrecord_name *name)
{
    static const char *const keys[] = {"family", "given", "middle", "prefix", "suffix", NULL};
    int n = get_table(r, t, key);
    if (!n)
        return;
    char saved[sizeof r->path];
    memcpy(saved, r->path, sizeof saved);
    snprintf(r->path + strlen(r->path), sizeof r->path - strlen(r->path), "%s%s",
             r->path[0] ? "." : "", key);
    check_keys(r, n, keys);
    name->family = get_string(r, n, "family");
    name->given = get_string(r, n, "given");
    name->middle = get_string(r, n, "middle");
    name->prefix = get_string(r, n, "prefix");
    name->suffix = get_string(r, n, "suffix");
    memcpy(r->path, saved, sizeof saved);
    lua_pop(r->L, 1);
}

static void read_control_point(reader *r, int t, rtb_rtrecord_control_point *cp)
{
    static const char *const keys[] = {
        "index", "datetime", "specified_meterset", "delivered_meterset", "dose_rate_set",
        "dose_rate_delivered", "energy", "energy_unit", "gantry_angle", "gantry_direction",
        "collimator_angle", "collimator_direction", "couch_angle", "couch_direction",
        "table_top_eccentric_distance", "table_top_eccentric_angle",
        "table_top_eccentric_direction", "table_top_vertical", "table_top_longitudinal",
        "table_top_lateral", "table_top_pitch_angle", "table_top_pitch_direction",
        "table_top_roll_angle", "table_top_roll_direction", "jaw_x", "jaw_y", "mlc", NULL};
    check_keys(r, t, keys);
    rtb_rtrecord_control_point_init(cp);
    cp->index = get_integer(r, t, "index");
    cp->datetime = get_string(r, t, "datetime");
    cp->specified_meterset = get_number(r, t, "specified_meterset");
    cp->delivered_meterset = get_number(r, t, "delivered_meterset");
    cp->dose_rate_set = get_number(r, t, "dose_rate_set");
    cp->dose_rate_delivered = get_number(r, t, "dose_rate_delivered");
    cp->energy = get_number(r, t, "energy");
    cp->energy_unit = get_string(r, t, "energy_unit");
    cp->gantry_angle = get_number(r, t, "gantry_angle");
    cp->gantry_direction = get_string(r, t, "gantry_direction");
    cp->collimator_angle = get_number(r, t, "collimator_angle");
    cp->collimator_direction = get_string(r, t, "collimator_direction");
    cp->couch_angle = get_number(r, t, "couch_angle");
    cp->couch_direction = get_string(r, t, "couch_direction");
    cp->table_top_eccentric_distance = get_number(r, t, "table_top_eccentric_distance");
    cp->table_top_eccentric_angle = get_number(r, t, "table_top_eccentric_angle");
    cp->table_top_eccentric_direction = get_string(r, t, "table_top_eccentric_direction");
    cp->table_top_vertical = get_number(r, t, "table_top_vertical");
    cp->table_top_longitudinal = get_number(r, t, "table_top_longitudinal");
    cp->table_top_lateral = get_number(r, t, "table_top_lateral");
    cp->table_top_pitch_angle = get_number(r, t, "table_top_pitch_angle");
    cp->table_top_pitch_direction = get_string(r, t, "table_top_pitch_direction");
    cp->table_top_roll_angle = get_number(r, t, "table_top_roll_angle");
    cp->table_top_roll_direction = get_string(r, t, "table_top_roll_direction");
    get_pair(r, t, "jaw_x", cp->jaw_x);
    get_pair(r, t, "jaw_y", cp->jaw_y);
    cp->mlc = get_numbers(r, t, "mlc", &cp->n_mlc);
}

/* A list of accessories t[key] ({{id =, type =, name =, accessory_code =, angle =,
 * orientation =, roi_number =}, ...}) into a new anchored array; *n = 0 if absent. */
static rtb_rtrecord_accessory *get_accessories(reader *r, int t, const char *key, size_t *n)
{
    static const char *const keys[] = {"id", "type", "name", "accessory_code", "angle", "orientation",
                                       "roi_number", NULL};
    int list = get_table(r, t, key);
    *n = 0;
    if (!list)
        return NULL;
    size_t len = (size_t)lua_rawlen(r->L, list);
    rtb_rtrecord_accessory *a = alloc(r, len * sizeof *a);
    size_t base = strlen(r->path);
    for (size_t i = 0; i < len; i++) {
        snprintf(r->path + base, sizeof r->path - base, ".%s[%zu]", key, i + 1);
        if (lua_rawgeti(r->L, list, (lua_Integer)i + 1) != LUA_TTABLE)
            rtb_lua_error_raise(r->L, "invalid", "%s must be a table", r->path);
        int e = lua_gettop(r->L);
        check_keys(r, e, keys);
        a[i].id = get_string(r, e, "id");
        a[i].type = get_string(r, e, "type");
        a[i].name = get_string(r, e, "name");
        a[i].accessory_code = get_string(r, e, "accessory_code");
        a[i].angle = get_number(r, e, "angle");
        a[i].orientation = get_number(r, e, "orientation");
        a[i].roi_number = get_integer(r, e, "roi_number");
        lua_pop(r->L, 1);
    }
    r->path[base] = '\0';
    lua_pop(r->L, 1);
    *n = len;
    return a;
}

static void read_beam(reader *r, int t, rtb_rtrecord_beam *beam)
{
    static const char *const keys[] = {
        "number", "name", "description", "beam_type", "radiation_type", "fluence_mode",
        "fluence_mode_id", "delivery_type", "termination_status", "termination_code",
        "verification_status", "current_fraction", "specified_meterset", "delivered_meterset",
        "delivered_time", "sad", "n_leaf_pairs", "mlc_type", "wedges", "compensators",
        "boli", "blocks", "applicators", "control_points", NULL};
    check_keys(r, t, keys);
    rtb_rtrecord_beam_init(beam);
    beam->number = get_integer(r, t, "number");
    beam->name = get_string(r, t, "name");
    beam->description = get_string(r, t, "description");
    beam->beam_type = get_string(r, t, "beam_type");
    beam->radiation_type = get_string(r, t, "radiation_type");
    beam->fluence_mode = get_string(r, t, "fluence_mode");
    beam->fluence_mode_id = get_string(r, t, "fluence_mode_id");
    beam->delivery_type = get_string(r, t, "delivery_type");
    beam->termination_status = get_string(r, t, "termination_status");
    beam->termination_code = get_string(r, t, "termination_code");
    beam->verification_status = get_string(r, t, "verification_status");
    beam->current_fraction = get_integer(r, t, "current_fraction");
    beam->specified_meterset = get_number(r, t, "specified_meterset");
    beam->delivered_meterset = get_number(r, t, "delivered_meterset");
    beam->delivered_time = get_number(r, t, "delivered_time");
    beam->sad = get_number(r, t, "sad");
    beam->n_leaf_pairs = get_integer(r, t, "n_leaf_pairs");
    beam->mlc_type = get_string(r, t, "mlc_type");
    beam->wedges = get_accessories(r, t, "wedges", &beam->n_wedges);
    beam->compensators = get_accessories(r, t, "compensators", &beam->n_compensators);
    beam->boli = get_accessories(r, t, "boli", &beam->n_boli);
    beam->blocks = get_accessories(r, t, "blocks", &beam->n_blocks);
    beam->applicators = get_accessories(r, t, "applicators", &beam->n_applicators);
    int list = get_table(r, t, "control_points");
    if (!list)
        return; /* the builder reports the missing control points */
    size_t n = (size_t)lua_rawlen(r->L, list);
    rtb_rtrecord_control_point *cps = alloc(r, n * sizeof *cps);
    size_t base = strlen(r->path);
    for (size_t k = 0; k < n; k++) {
        snprintf(r->path + base, sizeof r->path - base, ".control_points[%zu]", k + 1);
        if (lua_rawgeti(r->L, list, (lua_Integer)k + 1) != LUA_TTABLE)
            rtb_lua_error_raise(r->L, "invalid", "%s must be a table", r->path);
        read_control_point(r, lua_gettop(r->L), &cps[k]);
        lua_pop(r->L, 1);
    }
    r->path[base] = '\0';
    lua_pop(r->L, 1);
    beam->control_points = cps;
    beam->n_control_points = n;
}

static void read_private(reader *r, int t, rtb_rtrecord_private *p)
{
    static const char *const keys[] = {"creator", "group", "block", "elements", NULL};
    static const char *const element_keys[] = {"element", "vr", "value", NULL};
    strcpy(r->path, "private_block");
    check_keys(r, t, keys);
    p->creator = get_string(r, t, "creator");
    long group = get_integer(r, t, "group"), block = get_integer(r, t, "block");
    if (group == RTB_RTRECORD_NO_INT || group < 0 || group > 0xFFFF)
        bad_field(r, "group", "must be a group number (0x0009..0xFFFF, odd)");
    p->group = (unsigned)group;
    p->block = block == RTB_RTRECORD_NO_INT || block < 0 || block > 0xFF ? 0 : (unsigned)block;
    int list = get_table(r, t, "elements");
    if (!list)
        return;
    size_t n = (size_t)lua_rawlen(r->L, list);
    rtb_rtrecord_private_element *els = alloc(r, n * sizeof *els);
    for (size_t i = 0; i < n; i++) {
        snprintf(r->path, sizeof r->path, "private_block.elements[%zu]", i + 1);
        if (lua_rawgeti(r->L, list, (lua_Integer)i + 1) != LUA_TTABLE)
            rtb_lua_error_raise(r->L, "invalid", "%s must be a table", r->path);
        int e = lua_gettop(r->L);
        check_keys(r, e, element_keys);
        long element = get_integer(r, e, "element");
        if (element == RTB_RTRECORD_NO_INT || element < 0 || element > 0xFF)
            bad_field(r, "element", "must be 0x00..0xFF (the low byte of the element number)");
        els[i].element = (unsigned)element;
        els[i].vr = get_string(r, e, "vr");
        els[i].value = get_string(r, e, "value");
        lua_pop(r->L, 1);
    }
    lua_pop(r->L, 1);
    p->elements = els;
    p->n_elements = n;
}

static void read_input(reader *r, int t, rtb_rtrecord_input *in)
{
    static const char *const keys[] = {
        "sop_instance_uid", "creation_datetime", "instance_number", "patient", "study", "series",
        "equipment", "treatment_datetime", "plan_uid", "machine", "fractions_planned",
        "fraction_group", "primary_dosimeter_unit", "beams", "private_block", "referenced_records",
        NULL};
    static const char *const patient_keys[] = {"name", "id", "birth_date", "sex", NULL};
    static const char *const study_keys[] = {"instance_uid", "id", "datetime", "description",
                                             "accession_number", "referring_physician", NULL};
    static const char *const series_keys[] = {"instance_uid", "number", "description", "datetime",
                                              "operator_name", NULL};
    static const char *const equipment_keys[] = {"manufacturer", "institution_name",
                                                 "department_name", "model_name", "serial_number",
                                                 "software_versions", NULL};
    static const char *const machine_keys[] = {"name", "manufacturer", "model_name",
                                               "serial_number", "institution_name",
                                               "department_name", NULL};
    lua_State *L = r->L;
    check_keys(r, t, keys);
    rtb_rtrecord_input_init(in);
    in->sop_instance_uid = get_string(r, t, "sop_instance_uid");
    in->creation_datetime = get_string(r, t, "creation_datetime");
    in->instance_number = get_integer(r, t, "instance_number");
    in->treatment_datetime = get_string(r, t, "treatment_datetime");
    in->plan_uid = get_string(r, t, "plan_uid");
    in->fractions_planned = get_integer(r, t, "fractions_planned");
    in->fraction_group = get_integer(r, t, "fraction_group");
    in->primary_dosimeter_unit = get_string(r, t, "primary_dosimeter_unit");
    int s;
    if ((s = get_table(r, t, "referenced_records"))) {
        size_t n = (size_t)lua_rawlen(L, s);
        const char **uids = alloc(r, n * sizeof *uids);
        for (size_t i = 0; i < n; i++) {
            if (lua_rawgeti(L, s, (lua_Integer)i + 1) != LUA_TSTRING)
                rtb_lua_error_raise(L, "invalid", "referenced_records[%zu] must be a UID string", i + 1);
            uids[i] = lua_tostring(L, -1); /* the input table keeps it alive */
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        in->referenced_records = uids;
        in->n_referenced_records = n;
    }
    if ((s = get_table(r, t, "patient"))) {
        strcpy(r->path, "patient");
        check_keys(r, s, patient_keys);
        get_name(r, s, "name", &in->patient.name);
        in->patient.id = get_string(r, s, "id");
        in->patient.birth_date = get_string(r, s, "birth_date");
        in->patient.sex = get_string(r, s, "sex");
        lua_pop(L, 1);
    }
    if ((s = get_table(r, t, "study"))) {
        strcpy(r->path, "study");
        check_keys(r, s, study_keys);
        in->study.instance_uid = get_string(r, s, "instance_uid");
        in->study.id = get_string(r, s, "id");
        in->study.datetime = get_string(r, s, "datetime");
        in->study.description = get_string(r, s, "description");
        in->study.accession_number = get_string(r, s, "accession_number");
        get_name(r, s, "referring_physician", &in->study.referring_physician);
        lua_pop(L, 1);
    }
    if ((s = get_table(r, t, "series"))) {
        strcpy(r->path, "series");
        check_keys(r, s, series_keys);
        in->series.instance_uid = get_string(r, s, "instance_uid");
        in->series.number = get_integer(r, s, "number");
        in->series.description = get_string(r, s, "description");
        in->series.datetime = get_string(r, s, "datetime");
        get_name(r, s, "operator_name", &in->series.operator_name);
        lua_pop(L, 1);
    }
    if ((s = get_table(r, t, "equipment"))) {
        strcpy(r->path, "equipment");
        check_keys(r, s, equipment_keys);
        in->equipment.manufacturer = get_string(r, s, "manufacturer");
        in->equipment.institution_name = get_string(r, s, "institution_name");
        in->equipment.department_name = get_string(r, s, "department_name");
        in->equipment.model_name = get_string(r, s, "model_name");
        in->equipment.serial_number = get_string(r, s, "serial_number");
        in->equipment.software_versions = get_string(r, s, "software_versions");
        lua_pop(L, 1);
    }
    if ((s = get_table(r, t, "machine"))) {
        strcpy(r->path, "machine");
        check_keys(r, s, machine_keys);
        in->machine.name = get_string(r, s, "name");
        in->machine.manufacturer = get_string(r, s, "manufacturer");
        in->machine.model_name = get_string(r, s, "model_name");
        in->machine.serial_number = get_string(r, s, "serial_number");
        in->machine.institution_name = get_string(r, s, "institution_name");
        in->machine.department_name = get_string(r, s, "department_name");
        lua_pop(L, 1);
    }
    r->path[0] = '\0';
    if ((s = get_table(r, t, "beams"))) {
        size_t n = (size_t)lua_rawlen(L, s);
        rtb_rtrecord_beam *beams = alloc(r, n * sizeof *beams);
        for (size_t i = 0; i < n; i++) {
            snprintf(r->path, sizeof r->path, "beams[%zu]", i + 1);
            if (lua_rawgeti(L, s, (lua_Integer)i + 1) != LUA_TTABLE)
                rtb_lua_error_raise(L, "invalid", "%s must be a table", r->path);
            read_beam(r, lua_gettop(L), &beams[i]);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        in->beams = beams;
        in->n_beams = n;
    }
    r->path[0] = '\0';
    if ((s = get_table(r, t, "private_block"))) {
        rtb_rtrecord_private *p = alloc(r, sizeof *p);
        read_private(r, s, p);
        lua_pop(L, 1);
        in->private_block = p;
    }
    r->path[0] = '\0';
}

static int raise_build_error(lua_State *L, const rtb_rtrecord_error *err)
{
    rtb_lua_error_push(L, err->code == RTB_RTRECORD_E_DICOM ? "internal" : "invalid", err->message);
    if (err->field[0])
        rtb_lua_set_string(L, "field", err->field);
    return lua_error(L);
}

/* rtrecord.beams_treatment_record(input) -> dataset, {note, ...} (text cut to fit) */
static int l_beams_treatment_record(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    rtb_dicom_ensure_init(L);
    lua_newtable(L);
    static const char keys_key = 0; /* the registry slot of field()'s key strings */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &keys_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &keys_key);
    }
    reader r = {.L = L, .anchor = 2, .keys = 3};
    rtb_rtrecord_input in;
    read_input(&r, 1, &in);
    rtb_rtrecord_error err;
    rtb_rtrecord_notes *notes = lua_newuserdatauv(L, sizeof *notes, 0);
    rtb_ds *ds;
    if (rtb_rtrecord_build(&in, &ds, &err, notes) != 0)
        return raise_build_error(L, &err);
    rtb_dicom_push_dataset(L, ds, 0);
    lua_createtable(L, (int)notes->n, 0);
    for (size_t i = 0; i < notes->n; i++) {
        lua_pushstring(L, notes->note[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    if (notes->more) {
        lua_pushfstring(L, "... and %d more cut to fit", (int)notes->more);
        lua_rawseti(L, -2, (lua_Integer)notes->n + 1);
    }
    return 2;
}

/* rtrecord.check(ds) -> {problem, ...} (empty when the record conforms) */
static int l_check(lua_State *L)
{
    rtb_ds *ds = rtb_dicom_check_dataset(L, 1);
    enum { MAX = 64 };
    char (*problems)[RTB_RTRECORD_PROBLEM_MAX] = lua_newuserdatauv(L, MAX * sizeof *problems, 0);
    rtb_rtrecord_error err;
    int n = rtb_rtrecord_check(ds, problems, MAX, &err);
    if (n < 0)
        return raise_build_error(L, &err);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n && i < MAX; i++) {
        lua_pushstring(L, problems[i]);
        lua_rawseti(L, -2, i + 1);
    }
    if (n > MAX) {
        lua_pushfstring(L, "... and %d more", n - MAX);
        lua_rawseti(L, -2, MAX + 1);
    }
    return 1;
}

int luaopen_rtbackup_rtrecord_core(lua_State *L)
{
    /* Records are datasets of rtbackup.dicom: its metatable must exist. */
    luaL_requiref(L, "rtbackup.dicom.core", luaopen_rtbackup_dicom_core, 0);
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {{"beams_treatment_record", l_beams_treatment_record},
                                     {"check", l_check},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    lua_pushliteral(L, RTB_RTRECORD_SOP_CLASS);
    lua_setfield(L, -2, "SOP_CLASS");
    return 1;
}
