# chrono_forge — PGXS build.  `make && make install`, then see README.md;
# `make installcheck` runs the pg_regress suites and the isolation specs
# in a temporary instance of their own.

EXTENSION = chrono_forge
MODULE_big = chrono_forge
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" chrono_forge.control)

# The extension's SQL scripts live in extension/ (what PostgreSQL installs
# into SHAREDIR/extension), so that sql/ and expected/ are pg_regress's
# input and expected directories (PostgreSQL 15's pg_regress reads
# <inputdir>/sql and <inputdir>/expected).  extension/chrono_forge.sql is
# the current schema in one readable file; the install script of the
# current version is built from it (a fresh CREATE EXTENSION runs it).
# The released scripts, 0.1.0 and every upgrade, are installed as they
# are: ALTER EXTENSION ... UPDATE walks them.
DATA_built = extension/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built), $(wildcard extension/$(EXTENSION)--*.sql))

SRCS = $(wildcard src/*.c)
OBJS = $(SRCS:.c=.o)

# pg_regress suites (sql/, expected/; workers off), by topic; isolation
# specs for races (test/specs, test/expected).  Each runs in a temporary
# instance (initdb refuses to run as root: see test/run-all) configured by
# test/regress.conf or test/isolation.conf; results land in test/results.
REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --outputdir=test/results \
	--temp-instance=test/results/tmp_check --temp-config=test/regress.conf \
	--load-extension=chrono_forge
ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/results/isolation \
	--temp-instance=test/results/tmp_check_iso --temp-config=test/isolation.conf \
	--load-extension=chrono_forge

PG_CONFIG ?= pg_config
# No LLVM bitcode: JIT-inlining C procedures buys nothing, and it would
# need clang at build time.
override with_llvm = no
PG_CPPFLAGS = -I$(srcdir)/src -Wall -Wextra -Werror -Wno-unused-parameter
EXTRA_CLEAN = src/errcode_names.h test/results

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The databases the suites run in (PGXS passes --dbname=$(CONTRIB_TESTDB)
# and $(ISOLATION_TESTDB)); test/regress.conf names cf_regression for
# pg_cron.
CONTRIB_TESTDB = cf_regression
ISOLATION_TESTDB = cf_isolation

# initdb, which starts the temporary instances, refuses to run as root:
# say so at once (test/run-all runs the suites as the postgres user then).
installcheck: installcheck-not-root
installcheck-not-root:
	@if [ "$$(id -u)" = 0 ]; then echo "make installcheck: initdb refuses to run as root; run it as another user (bash test/run-all does that for you)" >&2; exit 1; fi

# The current version's install script: the schema file as it is (it
# carries the \echo guard, and MODULE_PATHNAME, which CREATE EXTENSION
# replaces with the control file's module_pathname).
$(DATA_built): extension/$(EXTENSION).sql chrono_forge.control
	cp $< $@

# Condition names as PL/pgSQL knows them, for retry_on matching.
ERRCODES_TXT = $(shell $(PG_CONFIG) --sharedir)/errcodes.txt
src/errcode_names.h: $(ERRCODES_TXT)
	awk '/^[0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][ \t]/ && NF >= 4 { printf "{\"%s\", \"%s\"},\n", $$4, $$1 }' $< > $@

src/retry.o: src/errcode_names.h
# Module headers (src/<module>.h) include each other: a change to any one
# rebuilds all, which takes seconds.
$(OBJS): $(wildcard src/*.h)

.PHONY: check-all demo bench installcheck-not-root
check-all:
	bash test/run-all
demo:
	bash demo/run
bench:
	bash bench/run
	bash bench/timers
