#!/usr/bin/env node
// Parses SQL texts as T-SQL (SQL Server), the way rtbackup sends them over ODBC.
//
//   node tests/tsql/parse.js FILE...        one SQL text per file
//   node tests/tsql/parse.js < query.sql    one text from standard input ("-" names it too)
//
// Exit 0: every text parsed. Exit 1: at least one did not; for each, a line
// "NAME:LINE:COLUMN: message" (positions in the text as given) and the line with a caret.
// Exit 2: bad usage, unreadable file, or node-sql-parser is not installed
// (tools/deps.sh installs it: npm ci --prefix tests/tsql).
//
// No SQL Server runs here, so this is a syntax check, not an execution: it catches
// what SQL Server would refuse before looking at any table (a missing comma or
// parenthesis, a trailing comma, another dialect's syntax), never a wrong column name.
//
// Two things make a text the parser can read without changing what it means:
//   * ODBC parameter markers. rtbackup binds values to '?' markers; the SQL Server ODBC
//     driver sends such a statement with the markers as the parameters @P1, @P2, ...
//     node-sql-parser's transactsql grammar has no '?', so each marker outside strings,
//     quoted identifiers and comments becomes @P1, @P2, ... here too.
//   * Nothing else. Quoted aliases ("patient__IDA"), CTEs, CAST, DATEADD, COALESCE
//     parse as written.
//
// The transactsql grammar also accepts a few constructs SQL Server does not have (it
// is shared with other dialects). Those are refused after parsing, by walking the
// syntax tree (so a string or a comment that mentions them does not count):
//   LIMIT n (T-SQL: TOP n, or OFFSET ... FETCH), a || b (T-SQL: a + b, or CONCAT;
//   '||' exists only from SQL Server 2025), x::type (T-SQL: CAST), IS TRUE / IS FALSE,
//   and functions of SQLite/PostgreSQL/MySQL that SQL Server lacks (NOT_TSQL_FUNCTIONS).
"use strict";

const fs = require("fs");

let Parser;
try {
    ({Parser} = require("node-sql-parser"));
} catch (e) {
    process.stderr.write("tests/tsql/parse.js: node-sql-parser is not installed " +
                         "(run tools/deps.sh, or: npm ci --prefix tests/tsql)\n");
    process.exit(2);
}

// Functions other dialects have and SQL Server does not (T-SQL's equivalent after ':').
const NOT_TSQL_FUNCTIONS = {
    DATE: "CAST(x AS DATE)", DATETIME: "CAST(x AS DATETIME)", STRFTIME: "FORMAT or CONVERT",
    JULIANDAY: "DATEDIFF", NOW: "GETDATE()", DATE_TRUNC: "DATETRUNC (2022) or DATEADD/DATEDIFF",
    TO_CHAR: "FORMAT or CONVERT", TO_DATE: "CONVERT", IFNULL: "ISNULL or COALESCE",
    NVL: "ISNULL or COALESCE", GROUP_CONCAT: "STRING_AGG", SUBSTR: "SUBSTRING",
    LENGTH: "LEN", INSTR: "CHARINDEX", DATE_ADD: "DATEADD", DATE_SUB: "DATEADD",
};

// '?' markers -> @P1..@Pn outside '...', "...", [...], -- and /* */.
// Returns the new text, the number of markers, and map[i] = offset in the original
// text of offset i in the new one (for error positions).
function bindMarkers(sql) {
    let out = "", count = 0;
    const map = [];
    const emit = (s, from) => {
        for (let k = 0; k < s.length; k++) map.push(from);
        out += s;
    };
    let i = 0;
    while (i < sql.length) {
        const c = sql[i], next = sql[i + 1];
        let end = -1;
        if (c === "'" || c === '"' || c === "[") {
            const close = c === "[" ? "]" : c;
            end = i + 1;
            for (;;) {
                const j = sql.indexOf(close, end);
                if (j < 0) { end = sql.length; break; }
                if (sql[j + 1] === close) { end = j + 2; continue; } // '' "" ]] escape
                end = j + 1;
                break;
            }
        } else if (c === "-" && next === "-") {
            const j = sql.indexOf("\n", i);
            end = j < 0 ? sql.length : j;
        } else if (c === "/" && next === "*") {
            const j = sql.indexOf("*/", i + 2);
            end = j < 0 ? sql.length : j + 2;
        }
        if (end >= 0) {
            for (let k = i; k < end; k++) { map.push(k); out += sql[k]; }
            i = end;
        } else if (c === "?") {
            count++;
            emit("@P" + count, i);
            i++;
        } else {
            map.push(i);
            out += c;
            i++;
        }
    }
    map.push(sql.length);
    return {text: out, count, map};
}

// What SQL Server lacks although the grammar took it, as a list of sentences.
function dialectProblems(ast) {
    const found = [];
    const seen = new Set();
    const note = (msg) => { if (!seen.has(msg)) { seen.add(msg); found.push(msg); } };
    const visit = (node) => {
        if (node === null || typeof node !== "object") return;
        if (Array.isArray(node)) { node.forEach(visit); return; }
        if (node.type === "select" && node.limit && Array.isArray(node.limit.value) &&
            node.limit.value.length > 0) {
            note("LIMIT is not T-SQL: use TOP n, or ORDER BY ... OFFSET ... FETCH");
        }
        if (node.type === "binary_expr" && node.operator === "||") {
            note("'||' is not T-SQL before SQL Server 2025: concatenate with + or CONCAT()");
        }
        if (node.type === "binary_expr" && /^IS( NOT)?$/i.test(node.operator || "") &&
            node.right && node.right.type === "bool") {
            note("IS TRUE / IS FALSE is not T-SQL: compare with = 1 / = 0");
        }
        if (node.type === "column_ref" && typeof node.column === "string" &&
            node.column.includes("::")) {
            note("'::' casts are not T-SQL: use CAST(x AS type) (" + node.column + ")");
        }
        if (node.type === "function" && node.name) {
            const parts = Array.isArray(node.name.name) ? node.name.name : [];
            const last = parts.length ? String(parts[parts.length - 1].value) : String(node.name);
            const hint = NOT_TSQL_FUNCTIONS[last.toUpperCase()];
            if (hint && parts.length <= 1) {
                note(last + "() is not a SQL Server function: use " + hint);
            }
        }
        for (const key of Object.keys(node)) visit(node[key]);
    };
    visit(ast);
    return found;
}

function lineAndColumn(text, offset) {
    let line = 1, start = 0;
    for (let k = 0; k < offset && k < text.length; k++) {
        if (text[k] === "\n") { line++; start = k + 1; }
    }
    const endOfLine = text.indexOf("\n", start);
    return {line, column: offset - start + 1,
            text: text.slice(start, endOfLine < 0 ? text.length : endOfLine)};
}

// {ok, statements, parameters} or {ok: false, messages: [...]} for one text.
function check(name, sql) {
    const bound = bindMarkers(sql);
    let ast;
    try {
        ast = new Parser().astify(bound.text, {database: "transactsql"});
    } catch (e) {
        const loc = e && e.location && e.location.start;
        if (!loc) return {ok: false, messages: [`${name}: ${e && e.message || e}`]};
        const at = lineAndColumn(sql, bound.map[Math.min(loc.offset, bound.map.length - 1)]);
        return {ok: false, messages: [
            `${name}:${at.line}:${at.column}: ${e.message}`,
            "    " + at.text,
            "    " + " ".repeat(Math.max(0, at.column - 1)) + "^"]};
    }
    const problems = dialectProblems(ast);
    if (problems.length > 0) {
        return {ok: false, messages: problems.map((p) => `${name}: ${p}`)};
    }
    const statements = Array.isArray(ast) ? ast.length : 1;
    return {ok: true, statements, parameters: bound.count};
}

function main(argv) {
    const inputs = [];
    const args = argv.length ? argv : ["-"];
    for (const a of args) {
        if (a === "-h" || a === "--help") {
            process.stdout.write("usage: node tests/tsql/parse.js [FILE|-]...\n");
            return 0;
        }
        try {
            inputs.push({name: a === "-" ? "<stdin>" : a,
                         sql: fs.readFileSync(a === "-" ? 0 : a, "utf8")});
        } catch (e) {
            process.stderr.write(`tests/tsql/parse.js: cannot read ${a}: ${e.message}\n`);
            return 2;
        }
    }
    let failed = 0;
    for (const {name, sql} of inputs) {
        if (!sql.trim()) {
            process.stdout.write(`${name}: empty SQL text\n`);
            failed++;
            continue;
        }
        const r = check(name, sql);
        if (r.ok) {
            process.stdout.write(`${name}: ok (${r.statements} statement${r.statements === 1 ? "" : "s"}, ` +
                                 `${r.parameters} parameter${r.parameters === 1 ? "" : "s"})\n`);
        } else {
            failed++;
            process.stdout.write(r.messages.join("\n") + "\n");
        }
    }
    return failed ? 1 : 0;
}

if (require.main === module) {
    process.exitCode = main(process.argv.slice(2));
}

module.exports = {check, bindMarkers, dialectProblems};
