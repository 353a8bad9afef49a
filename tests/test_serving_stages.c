/*
 * servable.json stage pipelines as src/serving parses them (ss_pipeline_parse, through the
 * worker's ss_servable_config_parse): what a composed servable's worker serves, and each
 * refusal with the method, the 1-based stage and the value named (MindSpore's texts where it
 * has one). Nothing is loaded: plugins are dlopened only when a servable starts.
 */
#include "check.h"
#include "shardserve/serving.h"
#include "shardserve/worker.h"

#define HEAD "{\"distributed\": {\"rank_size\": 1}, \"methods\": ["
#define MODEL(in, out)                                                                             \
    "{\"kind\": \"model\", \"model\": \"cls\", \"inputs\": " in ", \"outputs\": " out "}"
#define C_FN(in, out)                                                                              \
    "{\"kind\": \"c_function\", \"library\": \"lib.so\", \"inputs\": " in ", \"outputs\": " out "}"

static ss_status *parse(const char *text, ss_servable_config *c)
{
    return ss_servable_config_parse(text, strlen(text), "/srv/cls/servable.json", "cls", c);
}

static void plain_config_has_no_pipeline(void)
{
    ss_servable_config c;
    CHECK_OK(parse(HEAD "{\"name\": \"p\", \"inputs\": [\"x\"], \"outputs\": [\"y\"]}]}", &c));
    CHECK(c.stages == NULL && c.n_methods == 1 && !strcmp(c.methods[0].name, "p"));
    ss_servable_config_clear(&c);
}

static void worker_serves_the_model_method(void)
{
    ss_servable_config c;
    CHECK_OK(parse(HEAD
                   "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"label\"], \"stages\": "
                   "[" C_FN("[\"x\"]", "[\"xs\"]") "," MODEL("[\"xs\"]", "[\"logits\"]") "," C_FN(
                       "[\"logits\"]", "[\"label\"]") "]},"
                                                      "{\"name\": \"plain\", \"inputs\": [\"a\"], "
                                                      "\"outputs\": [\"b\"]}]}",
                   &c));
    CHECK(c.stages != NULL && c.n_methods == 1);
    CHECK(!strcmp(c.methods[0].name, "@call_cls_0"));
    CHECK(c.methods[0].n_inputs == 1 && !strcmp(c.methods[0].inputs[0], "xs"));
    CHECK(c.methods[0].n_outputs == 1 && !strcmp(c.methods[0].outputs[0], "logits"));
    ss_servable_config_clear(&c);
    CHECK(c.stages == NULL);
}

static void refusals_name_method_stage_and_value(void)
{
    ss_servable_config c;
    CHECK_ERR(parse(HEAD
                    "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"stages\": ["
                    "{\"kind\": \"python\", \"inputs\": [\"x\"], \"outputs\": [\"y\"]}]}]}",
                    &c),
              "/srv/cls/servable.json: method 'm' stage 1: 'kind' must be \"model\", "
              "\"c_function\" or \"python_function\", got 'python'");
    CHECK_ERR(
        parse(HEAD
              "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"stages\": [" MODEL(
                  "[\"x\"]", "[\"z\"]") "," C_FN("[\"q\"]", "[\"y\"]") "]}]}",
              &c),
        "method 'm' stage 2: input 'q' is neither an input of the method nor an output of "
        "an earlier stage");
    CHECK_ERR(
        parse(HEAD
              "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"stages\": [" MODEL(
                  "[\"x\"]", "[\"x\"]") "]}]}",
              &c),
        "method 'm' stage 1: output 'x' is already defined in this method");
    CHECK_ERR(parse(HEAD
                    "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"stages\": ["
                    "{\"kind\": \"model\", \"model\": \"other\", \"inputs\": [\"x\"], \"outputs\": "
                    "[\"y\"]}]}]}",
                    &c),
              "method 'm' stage 1: 'model' must name a model the servable declares, got 'other'");
    CHECK_ERR(parse(HEAD
                    "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"stages\": ["
                    "{\"kind\": \"c_function\", \"inputs\": [\"x\"], \"outputs\": [\"y\"]}]}]}",
                    &c),
              "method 'm' stage 1: a c_function stage needs 'library'");
    CHECK_ERR(parse(HEAD "{\"name\": \"m\", \"inputs\": [\"x\", \"w\"], \"outputs\": [\"y\"], "
                         "\"stages\": [" MODEL("[\"x\"]", "[\"z\"]") "," MODEL("[\"z\", \"w\"]",
                                                                               "[\"y\"]") "]}]}",
                    &c),
              "method 'm' stage 2: RegisterInputOutputInfo failed, inputs count 2 not match old "
              "count 1, model: cls");
    CHECK_ERR(parse(HEAD "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"y\", \"z\"], "
                         "\"stages\": [" MODEL("[\"x\"]", "[\"y\"]") "], \"returns\": [\"y\"]}]}",
                    &c),
              "method 'm': Method return output size 1 not match registered 2");
    CHECK_ERR(
        parse(HEAD
              "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"stages\": [" C_FN(
                  "[\"x\"]", "[\"y\"]") "]}]}",
              &c),
        "no method runs the model 'cls'");
    CHECK_ERR(
        parse(HEAD "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"stages\": {}}]}",
              &c),
        "method 'm': 'stages' must be a list of at most 64 stages");
}

#define PY_FN(extra)                                                                               \
    HEAD "{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"y\"], \"stages\": ["              \
         "{\"kind\": \"python_function\", \"inputs\": [\"x\"], \"outputs\": [\"x1\"]" extra        \
         "}," MODEL("[\"x1\"]", "[\"y\"]") "]}]}"

/* python_function stages: parsed like C ones (nothing is started until the servable starts). */
static void python_stages_parse_and_refuse(void)
{
    ss_servable_config c;
    CHECK_OK(parse(PY_FN(", \"module\": \"fns.py\", \"function\": \"f\", \"batch_size\": 4"), &c));
    CHECK(c.stages != NULL && !strcmp(c.methods[0].inputs[0], "x1"));
    ss_servable_config_clear(&c);
    CHECK_ERR(
        parse(PY_FN(", \"function\": \"f\""), &c),
        "/srv/cls/servable.json: method 'm' stage 1: a python_function stage needs 'module' (a "
        ".py file)");
    CHECK_ERR(parse(PY_FN(", \"module\": \"fns.py\""), &c),
              "method 'm' stage 1: a python_function stage needs 'function' (a name)");
    CHECK_ERR(parse(PY_FN(", \"module\": \"fns.py\", \"function\": \"f\", \"batch_size\": -1"), &c),
              "method 'm' stage 1: Parameter 'batch_size' should be >= 0");
    CHECK_ERR(
        parse(PY_FN(", \"module\": \"fns.py\", \"function\": \"f\", \"batch_size\": 1.5"), &c),
        "method 'm' stage 1: Parameter 'batch_size' should be int");
}

/* "models": one backend per declared model's subgraph, each with its own group settings; a
 * subgraph no stage names has no names (its worker takes the model's own). */
#define MODELS                                                                                     \
    "{\"models\": [{\"name\": \"a\", \"distributed\": {\"rank_size\": 2}}, {\"name\": \"g\", "     \
    "\"files\": [\"g0.onnx\", \"g1.onnx\"], \"distributed\": {\"with_batch_dim\": false}}], "      \
    "\"methods\": [{\"name\": \"m\", \"inputs\": [\"x\"], \"outputs\": [\"z\"], \"stages\": ["     \
    "{\"kind\": \"model\", \"model\": \"a\", \"inputs\": [\"x\"], \"outputs\": [\"y\"]},"          \
    "{\"kind\": \"model\", \"model\": \"g\", \"inputs\": [\"y\"], \"outputs\": [\"z\"]}]}]}"

static void models_each_get_a_worker_config(void)
{
    ss_servable_config c;
    const char *text = MODELS;
    CHECK_OK(ss_servable_config_parse_model(text, strlen(text), "s.json", "cls", 0, &c));
    CHECK(c.n_models == 3 && c.stages != NULL && c.rank_size == 2 && !c.local_file[0]);
    CHECK(!strcmp(c.methods[0].name, "@call_a_0") && !strcmp(c.methods[0].inputs[0], "x"));
    ss_servable_config_clear(&c);
    CHECK_OK(ss_servable_config_parse_model(text, strlen(text), "s.json", "cls", 1, &c));
    CHECK(c.stages == NULL && c.rank_size == 1 && !c.with_batch_dim && c.subgraph == 0);
    CHECK(!strcmp(c.local_file, "g0.onnx") && !strcmp(c.methods[0].name, "@call_g_0"));
    CHECK(!strcmp(c.methods[0].outputs[0], "z"));
    CHECK_OK(ss_servable_config_parse_model(text, strlen(text), "s.json", "cls", 2, &c));
    CHECK(c.subgraph == 1 && !strcmp(c.local_file, "g1.onnx") && c.methods[0].n_inputs == 0);
    CHECK(!strcmp(c.methods[0].name, "@call_g_1") && !strcmp(c.model_name, "g"));
    CHECK_ERR(ss_servable_config_parse_model(text, strlen(text), "s.json", "cls", 3, &c),
              "s.json: no model 3");
}

TEST_MAIN(TEST(plain_config_has_no_pipeline), TEST(worker_serves_the_model_method),
          TEST(python_stages_parse_and_refuse), TEST(refusals_name_method_stage_and_value),
          TEST(models_each_get_a_worker_config))
