--- create a synthetic Mosaiq database (demo, tests, benchmarks)
local cli = require "rtbackup.cli"
local errors = require "rtbackup.error"
local mosaiq = require "rtbackup.mosaiq.query"
local mcli = require "rtbackup.mosaiq.cli"
local synth = require "rtbackup.mosaiq.synth"

local parser = cli.parser("mosaiq-db", [[
Creates the Mosaiq-shaped tables in an environment's Mosaiq source and fills them with
a synthetic clinic (no real patient data; the same seed gives the same database).
For SQLite the file is db_database (its directory is created); an existing file or
existing tables are kept unless --force.
  rtbackup mosaiq-db create DEMO --patients 20 --from 2026-11-02 --days 30
  rtbackup mosaiq-db create DEMO MOSAIQ --patients 200 --from 2026-11-02 --days 60 --seed 7 --force]],
    "0 created, 1 database failure or the database exists (see --force), 2 usage or configuration error")
parser:command_target("command")
local create = parser:command("create", "create and fill the database")
create:argument("env", "environment")
create:argument("source", "Mosaiq source alias (default: default_source if Mosaiq, else the first)")
      :args("?")
create:option("--patients", "number of patients", "20"):convert(cli.whole_number("--patients", 1))
create:option("--from", "first day of the period, YYYY-MM-DD")
      :args(1)
create:option("--days", "length of the period in days", "30"):convert(cli.whole_number("--days", 1))
create:option("--seed", "seed of the generator", "1"):convert(cli.whole_number("--seed"))
create:option("--leaf-encoding", "how MLC leaf sets are stored", "int16_0.01cm")
      :choices{"int16_0.01cm", "float32_mm"}
create:flag("--faults", "also put in data a clinic must repair (a delivery naming a deleted field version)")
create:flag("--force", "replace an existing database or tables")
local args = cli.parse(parser, {...})

if not args.from then
    errors.raise{kind = "usage", message = "give --from YYYY-MM-DD (the first day of the period)"}
end

-- An existing SQLite file is removed (--force) or refused; its directory is made.
local function prepare_sqlite_file(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
        if not args.force then
            errors.raise{kind = "exists", message = path .. " exists; use --force to replace it"}
        end
        local ok, err = os.remove(path)
        if not ok then errors.raise{kind = "io", message = "cannot remove " .. err} end
    end
    local dir = path:match("^(.*)/[^/]*$")
    if dir and dir ~= "" then require("rtbackup.files").private_dir(dir) end
end

local function run()
    local env = cli.load_env(args.env)
    local source = mcli.source(env, args.source)
    local opts = synth.options{seed = args.seed, patients = args.patients, start_date = args.from,
                               days = args.days, leaf_encoding = args.leaf_encoding, faults = args.faults}
    local sqlite = (source.odbc_driver or ""):lower():find("sqlite", 1, true)
    if sqlite then prepare_sqlite_file(source.db_database) end
    local db, _, alias = mcli.connect(env, args.source, {create = true})
    local ok, result = pcall(function()
        if not sqlite and args.force then mosaiq.drop_schema(db) end
        mosaiq.create_schema(db)
        return synth.generate(db, opts)
    end)
    db:close()
    if not ok then
        if sqlite then os.remove(source.db_database) end -- no half-made database left behind
        error(result, 0)
    end
    local c = result.counts
    io.stdout:write(string.format(
        "%s %s: %d patients, %d sites, %d fields, %d control points, %d deliveries (Dose_Hst), " ..
        "%d appointments, from %s for %d days, seed %d\n",
        args.env, alias, c.Patient or 0, c.Site or 0, c.TxField or 0, c.TxFieldPoint or 0,
        c.Dose_Hst or 0, c.Schedule or 0, args.from, args.days, args.seed))
    return cli.EXIT.ok
end

local ok, result = pcall(run)
if ok then return result end
if errors.is(result) and result.kind ~= "usage" and result.kind ~= "config" and result.kind ~= "invalid" then
    io.stderr:write("rtbackup mosaiq-db: ", tostring(result), "\n")
    return cli.EXIT.failure
end
if errors.is(result, "invalid") then result.kind = "usage" end
error(result, 0)
