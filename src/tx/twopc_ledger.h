/* tx/twopc_ledger.h - a small bank ledger as a 2PC SQLite participant: the transfer that the
 * 2PC tests, keel-twopc and its benchmark against the saga run. */
#ifndef KEEL_TX_TWOPC_LEDGER_H
#define KEEL_TX_TWOPC_LEDGER_H

#include "tx/twopc.h"

#include <stdint.h>

/*
 * Tables (in the participant's database, beside twopc_tx):
 *   accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL)
 *   holds    (txid TEXT PRIMARY KEY, account TEXT NOT NULL, amount INTEGER NOT NULL)
 * A transfer's input is the text "<from_bank> <from_account> <to_bank> <to_account> <amount>"
 * (amount 1..KEEL_LEDGER_AMOUNT_MAX). At prepare, the bank named from_bank puts a hold of
 * -amount on from_account when its available balance (balance plus its negative holds)
 * covers it, else votes no; the bank named to_bank puts a hold of +amount on to_account
 * (no if the account does not exist). Commit applies the hold to the balance and deletes
 * it; abort deletes it. A hold is the lock a prepared bank keeps while in doubt: the money
 * is neither spendable nor gone, and `holds` shows it.
 */
#define KEEL_LEDGER_AMOUNT_MAX 1000000000LL
#define KEEL_LEDGER_ACCOUNT_BYTES_MAX 32u

typedef struct keel_ledger {
    char bank[KEEL_TWOPC_NAME_BYTES_MAX + 1];
} keel_ledger_t;

extern const keel_twopc_sqlite_ops_t keel_ledger_ops;

/* Creates the tables and accounts acct-0 .. acct-(n-1) with `balance` each, if absent. */
int keel_ledger_setup(keel_db_t *db, uint32_t accounts, int64_t balance, keel_errmsg_t *msg);
/* Sum of balances, and the number and sum of holds. */
int keel_ledger_totals(keel_db_t *db, int64_t *balance_sum, int64_t *holds_n, int64_t *holds_sum,
                       keel_errmsg_t *msg);
/* Parses a transfer input; 0 or KEEL_EINVAL. */
int keel_ledger_parse(const uint8_t *in, size_t len, char *from_bank, char *from_acct,
                      char *to_bank, char *to_acct, int64_t *amount);

#endif
