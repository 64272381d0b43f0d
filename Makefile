# chrono_forge — PGXS build.  `make && make install`, then see README.md.

EXTENSION = chrono_forge
MODULE_big = chrono_forge
DATA = $(wildcard sql/chrono_forge--*.sql)

SRCS = $(wildcard src/*.c)
OBJS = $(SRCS:.c=.o)

# pg_regress suites (workers off), by topic; isolation specs for races.
REGRESS = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
REGRESS_OPTS = --inputdir=test --outputdir=test/results --load-extension=chrono_forge
ISOLATION = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/results/isolation --load-extension=chrono_forge

PG_CONFIG ?= pg_config
# No LLVM bitcode: JIT-inlining C procedures buys nothing, and it would
# need clang at build time.
override with_llvm = no
PG_CPPFLAGS = -I$(srcdir)/src -Wall -Wextra -Werror -Wno-unused-parameter
EXTRA_CLEAN = src/errcode_names.h test/results

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Condition names as PL/pgSQL knows them, for retry_on matching.
ERRCODES_TXT = $(shell $(PG_CONFIG) --sharedir)/errcodes.txt
src/errcode_names.h: $(ERRCODES_TXT)
	awk '/^[0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][0-9A-Z][ \t]/ && NF >= 4 { printf "{\"%s\", \"%s\"},\n", $$4, $$1 }' $< > $@

src/retry.o: src/errcode_names.h
# Every subsystem includes the shared header: a change to it rebuilds all.
$(OBJS): src/chrono_forge.h

.PHONY: check-all demo bench
check-all:
	bash test/run-all
demo:
	bash demo/run
bench:
	bash test/bench/run
	bash test/bench/timers
