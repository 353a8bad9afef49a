/*
 * Liveness between `shardserve agents` and its agent processes (internal to src/agent): one
 * shared memory object with a slot per rank the launcher starts (its local ranks; under mpirun
 * every rank of the job, of which those on other hosts cannot reach it). An agent stamps its slot
 * every time its link-reading path takes a frame off the worker link; the worker heartbeats every
 * registered rank at least once a second, so a registered rank whose stamp goes stale has stopped
 * reading (SIGSTOP, a deadlock). The launcher sees that on its own, without asking the worker —
 * which matters when the rank is alone in its group and no other rank exits to bring the group
 * down.
 */
#ifndef SS_AGENT_LIVENESS_H
#define SS_AGENT_LIVENESS_H

#include <stdint.h>
#include <sys/types.h>

typedef struct ss_liveness ss_liveness;
typedef struct ss_liveness_slot ss_liveness_slot;

/* Launcher side. create: n zeroed slots (NULL when out of memory or without memfd). */
ss_liveness *ss_liveness_create(int n);
void ss_liveness_free(ss_liveness *l);
/* A new generation of agents starts: every slot back to "not registered". */
void ss_liveness_reset(ss_liveness *l);
/* In the forked child before exec: hand slot i down (an inherited fd named in the environment). */
void ss_liveness_pass(const ss_liveness *l, int i);
/* In mpirun's child before exec: name the page for the ranks mpirun starts on this host (passed
 * on with -x SHARDSERVE_AGENT_LIVENESS_MPI); world rank i takes slot i. */
void ss_liveness_export(const ss_liveness *l);
/* The pid that slot i's agent wrote when it attached (0: none since the last reset). */
pid_t ss_liveness_pid(const ss_liveness *l, int i);
/* Milliseconds since slot i's rank last read a frame; -1 while it has not registered. */
int64_t ss_liveness_silent_ms(const ss_liveness *l, int i, uint64_t now_ns);

/* Agent side. attach: the slot its launcher handed down or exported, NULL when there is none
 * (started by hand, or by mpirun on another host); every call below accepts NULL. */
ss_liveness_slot *ss_liveness_attach(void);
void ss_liveness_detach(ss_liveness_slot *s);
/* A frame was read. The first beat (at registration) arms the launcher's check. */
void ss_liveness_beat(ss_liveness_slot *s);

#endif
