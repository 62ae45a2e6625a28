-- Runs busted inside the rtbackup host (`rtbackup run tests/spec/run_specs.lua SPEC...`),
-- so specs can require the rtbackup modules, C bindings included.
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/") or "."
package.path = here .. "/?.lua;" .. package.path
require "busted.runner" ({standalone = false})
