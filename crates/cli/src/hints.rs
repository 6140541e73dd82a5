//! A fix hint for every stable error code (the same table as docs/errors.md).

pub fn hint(code: &str) -> &'static str {
    match code {
        "SLUICE-1001" => "Send a JSON object (or an array of them) with the right types.",
        "SLUICE-1002" => "Every event needs a non-empty \"name\".",
        "SLUICE-1003" => "Shrink the event, or raise --max-event-bytes.",
        "SLUICE-1004" => "Split the request, or raise --max-request-bytes.",
        "SLUICE-1005" => "Send at most 5,000 events per request.",
        "SLUICE-1101" => "Fix the function definition in the app and sync again.",
        "SLUICE-1102" => "Use a 5-field cron (optionally prefixed TZ=Zone/Name) or a descriptor like @daily.",
        "SLUICE-1103" => "Use a duration like 30s, 5m, 2h, 1d or an ISO-8601 date.",
        "SLUICE-1201" => {
            "The URL answered but not as an Inngest SDK: check the serve path and any proxy in front of it."
        }
        "SLUICE-1301" => "The signing keys of sluice and the SDK differ: set the same INNGEST_SIGNING_KEY on both.",
        "SLUICE-1401" => "Simplify the expression (at most 8 KiB and 32 levels of nesting).",
        "SLUICE-1402" => "Fix the CEL syntax of the expression.",
        "SLUICE-1403" => "The expression failed at runtime; check the fields it reads.",
        "SLUICE-2001" => "Check that the database is reachable and not full; sluice retries on its own.",
        "SLUICE-2002" => "Stored data failed to decode: run `sluice doctor` or restore a backup.",
        "SLUICE-2003" => {
            "Check --db: a SQLite path no other sluice holds, with write permission; or a postgres:// URL whose \
             server is up and reachable, with the right user, password and database."
        }
        "SLUICE-3001" => "Start the worker, or check the URL and that it is reachable from sluice.",
        "SLUICE-3002" => "The worker answered the sync with an error: read its logs.",
        "SLUICE-3101" => "Check the run id (`sluice runs list`).",
        "SLUICE-3102" => "The run already ended; nothing to cancel.",
        "SLUICE-3103" => "List deployments with GET /v1/deployments (or `sluice deploy verify-runtime`).",
        "SLUICE-3104" => "Use /activate for cutover and rollback; the allowed moves are in docs/errors.md.",
        "SLUICE-4003" => "Start sluice with `sluice dev --test-clock` to move its clock.",
        "SLUICE-4001" => "Pass the signing key (--signing-key or SLUICE_SIGNING_KEY) or a configured event key.",
        "SLUICE-4004" => "Check the id.",
        "SLUICE-5001" => "Is sluice running? Start it with `sluice dev`, or pass --api URL.",
        "SLUICE-5002" => "Fix the configuration value named in the message.",
        _ => "See docs/errors.md.",
    }
}
