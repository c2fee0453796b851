#ifndef VAULT_CLIBPQ_SHIM_H
#define VAULT_CLIBPQ_SHIM_H

#include <libpq-fe.h>

// PG_DIAG_* field codes are character literals in postgres_ext.h; they import
// fine, so this header only has to pull libpq in.

#endif
