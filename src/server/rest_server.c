#include "shardserve/server.h"
struct ss_rest_server { int port; };
ss_status *ss_rest_server_start(const ss_rest_options *opts, ss_rest_server **out)
{
    *out = NULL;
    return ss_errf(SS_ERR_UNSUPPORTED, "REST not yet");
}
int ss_rest_server_port(const ss_rest_server *srv) { return srv ? srv->port : 0; }
void ss_rest_server_stop(ss_rest_server *srv) {}
