/* tx/twopc_ledger.c - the bank ledger participant (tx/twopc_ledger.h). */
#include "tx/twopc_ledger.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int keel_ledger_parse(const uint8_t *in, size_t len, char *from_bank, char *from_acct,
                      char *to_bank, char *to_acct, int64_t *amount)
{
    char text[256];
    if (in == NULL || len == 0 || len >= sizeof(text))
        return KEEL_EINVAL;
    memcpy(text, in, len);
    text[len] = '\0';
    char tail;
    long long a;
    /* widths: KEEL_TWOPC_NAME_BYTES_MAX and KEEL_LEDGER_ACCOUNT_BYTES_MAX */
    if (sscanf(text, "%32s %32s %32s %32s %lld%c", from_bank, from_acct, to_bank, to_acct, &a,
               &tail) != 5)
        return KEEL_EINVAL;
    if (a < 1 || a > KEEL_LEDGER_AMOUNT_MAX || strcmp(from_bank, to_bank) == 0)
        return KEEL_EINVAL;
    *amount = a;
    return 0;
}

static int one_int(keel_db_t *db, const char *sql, const char *arg, int64_t *out,
                   keel_errmsg_t *msg)
{
    sqlite3_stmt *q;
    int rc = keel_db_prepare(db, sql, &q, msg);
    if (rc != 0)
        return rc;
    if (arg)
        sqlite3_bind_text(q, 1, arg, -1, SQLITE_STATIC);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        *out = sqlite3_column_int64(q, 0);
        rc = 0;
    } else {
        rc = step == SQLITE_DONE ? KEEL_ENOTFOUND : keel_db_error(db, step, "ledger", msg);
    }
    sqlite3_finalize(q);
    return rc;
}

static int exec_hold(keel_db_t *db, const char *sql, const char *txid, const char *acct,
                     int64_t amount, keel_errmsg_t *msg)
{
    sqlite3_stmt *q;
    int rc = keel_db_prepare(db, sql, &q, msg);
    if (rc != 0)
        return rc;
    sqlite3_bind_text(q, 1, txid, -1, SQLITE_STATIC);
    if (acct)
        sqlite3_bind_text(q, 2, acct, -1, SQLITE_STATIC);
    if (acct)
        sqlite3_bind_int64(q, 3, amount);
    int step = sqlite3_step(q);
    rc = step == SQLITE_DONE ? 0 : keel_db_error(db, step, "ledger hold", msg);
    sqlite3_finalize(q);
    return rc;
}

static int l_prepare(keel_db_t *db, const char *id, const uint8_t *input, size_t len, void *data,
                     keel_errmsg_t *msg)
{
    keel_ledger_t *l = data;
    char fb[40], fa[40], tb[40], ta[40];
    int64_t amount, have = 0;
    if (keel_ledger_parse(input, len, fb, fa, tb, ta, &amount) != 0)
        return keel_errf(msg, KEEL_EREJECTED, "ledger: malformed transfer");
    bool from = strcmp(fb, l->bank) == 0;
    if (!from && strcmp(tb, l->bank) != 0)
        return keel_errf(msg, KEEL_EREJECTED, "ledger: bank %s is not in this transfer", l->bank);
    const char *acct = from ? fa : ta;
    int rc = one_int(db,
                     "SELECT a.balance + COALESCE((SELECT SUM(h.amount) FROM holds h WHERE "
                     "h.account = a.id AND h.amount < 0), 0) FROM accounts a WHERE a.id = ?1",
                     acct, &have, msg);
    if (rc == KEEL_ENOTFOUND)
        return keel_errf(msg, KEEL_EREJECTED, "ledger: no account %s", acct);
    if (rc != 0)
        return rc;
    if (from && have < amount)
        return keel_errf(msg, KEEL_EREJECTED, "ledger: %s has %" PRId64 " available", acct, have);
    return exec_hold(db, "INSERT INTO holds (txid, account, amount) VALUES (?1, ?2, ?3)", id, acct,
                     from ? -amount : amount, msg);
}

static int l_commit(keel_db_t *db, const char *id, void *data, keel_errmsg_t *msg)
{
    (void)data;
    int rc = exec_hold(db,
                       "UPDATE accounts SET balance = balance + (SELECT amount FROM holds WHERE "
                       "txid = ?1) WHERE id = (SELECT account FROM holds WHERE txid = ?1)",
                       id, NULL, 0, msg);
    return rc != 0 ? rc : exec_hold(db, "DELETE FROM holds WHERE txid = ?1", id, NULL, 0, msg);
}

static int l_abort(keel_db_t *db, const char *id, void *data, keel_errmsg_t *msg)
{
    (void)data;
    return exec_hold(db, "DELETE FROM holds WHERE txid = ?1", id, NULL, 0, msg);
}

const keel_twopc_sqlite_ops_t keel_ledger_ops = {
    .prepare = l_prepare, .commit = l_commit, .abort = l_abort};

int keel_ledger_setup(keel_db_t *db, uint32_t accounts, int64_t balance, keel_errmsg_t *msg)
{
    int rc = keel_db_exec(db,
                          "CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, balance "
                          "INTEGER NOT NULL);"
                          "CREATE TABLE IF NOT EXISTS holds (txid TEXT PRIMARY KEY, account TEXT "
                          "NOT NULL, amount INTEGER NOT NULL)",
                          msg);
    if (rc != 0 || (rc = keel_db_begin(db, msg)) != 0)
        return rc;
    for (uint32_t i = 0; i < accounts && rc == 0; i++) {
        char sql[128];
        snprintf(sql, sizeof(sql),
                 "INSERT OR IGNORE INTO accounts (id, balance) VALUES ('acct-%u', %" PRId64 ")", i,
                 balance);
        rc = keel_db_exec(db, sql, msg);
    }
    if (rc != 0) {
        keel_db_rollback(db);
        return rc;
    }
    return keel_db_commit(db, msg);
}

int keel_ledger_totals(keel_db_t *db, int64_t *balance_sum, int64_t *holds_n, int64_t *holds_sum,
                       keel_errmsg_t *msg)
{
    int rc = one_int(db, "SELECT COALESCE(SUM(balance), 0) FROM accounts", NULL, balance_sum, msg);
    if (rc == 0)
        rc = one_int(db, "SELECT COUNT(*) FROM holds", NULL, holds_n, msg);
    if (rc == 0)
        rc = one_int(db, "SELECT COALESCE(SUM(amount), 0) FROM holds", NULL, holds_sum, msg);
    return rc;
}
