"""A Python stage runner: one of the small pool of processes `shardserve serve` starts for a
servable's python_function stages. It imports the stages' modules once, then answers calls: serve
writes a batch's tensors into the shared segment (fd 4) and sends a 24-byte message on the socket
(fd 3); the runner calls the function, writes the outputs after the request in the same segment and
answers with one message. The layout is described at the top of src/serving/pyrunner.c.

Inputs reach the function as writable numpy views of the segment (MindSpore's zero-copy inputs),
STRING as str, BYTES as a 1-D uint8 array. Outputs follow MindSpore's conversions: bytes -> BYTES,
str -> STRING, bool/int/float -> 0-d BOOL/INT64/FLOAT64, arrays (or anything numpy takes) by dtype.
A per-instance exception fails that instance; what MindSpore treats as a system failure (a wrong
output count, too few results, an output it cannot convert) fails the whole call with its text."""

import importlib.util
import mmap
import os
import socket
import struct
import sys
import traceback

import numpy as np

MSG = struct.Struct("<IIQQ")
REC = struct.Struct("<iiQQ8q")
HDR_IN = struct.Struct("<IIQ")
HDR_OUT = struct.Struct("<IIIIQ")
INST = struct.Struct("<IIQ")
STRING, BYTES = 8, 0x108
NO_DIMS = (0,) * 8
CODES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3,
         np.dtype(np.uint16): 4, np.dtype(np.int16): 5, np.dtype(np.int32): 6,
         np.dtype(np.int64): 7, np.dtype(np.bool_): 9, np.dtype(np.float16): 10,
         np.dtype(np.float64): 11, np.dtype(np.uint32): 12, np.dtype(np.uint64): 13}
DTYPES = {code: dt for dt, code in CODES.items()}


class SystemFailure(Exception):
    """A failure MindSpore answers for every instance of the call (its worker would stop)."""


def declared_index(key):
    """The model's position among the declared ones (serve's order for a servable's models)."""
    from mindspore_serving.server.register import _state
    keys = [m.model_key for m in _state.models + ([_state.distributed] if _state.distributed else [])]
    return keys.index(key) if key in keys else 0xFFFFFFFF


def align64(n):
    return (n + 63) & ~63


def load_module(servable, path, cache):
    if path in cache:
        return cache[path]
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(os.path.abspath(path))
    root = os.path.dirname(folder)
    if root not in sys.path:
        sys.path.insert(0, root)
    name = "%s.%s" % (servable, stem)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as e:  # MindSpore's wording, then the cause
        raise RuntimeError("import %s failed, %s\n%s" % (name, e, traceback.format_exc())) from None
    cache[path] = module
    return module


def resolve(servable, stage, cache):
    module = load_module(servable, stage["module"], cache)
    try:
        from mindspore_serving.server.register import method as shim
        fn = shim.registered_function(stage["key"])
    except ImportError:
        fn = None
    fn = fn or getattr(module, stage["function"], None)
    if not callable(fn):
        raise RuntimeError("Function '%s' is not defined in %s" % (stage["key"], stage["module"]))
    return fn


class Runner:
    def __init__(self, servable, stages):
        self.sock = socket.socket(fileno=3)
        self.fd = 4
        self.size = os.fstat(self.fd).st_size
        self.mm = mmap.mmap(self.fd, self.size)
        self.mv = memoryview(self.mm)
        self.servable = servable
        self.stages = stages
        self.functions = []
        self.passed = []
        self.msg = bytearray(MSG.size)

    def remap(self, size):
        if size > os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, size)
        # older arrays may still view the old map: leave it to the garbage collector
        self.mm = mmap.mmap(self.fd, size)
        self.mv = memoryview(self.mm)
        self.size = size

    def start(self):
        cache = {}
        try:
            from mindspore_serving.server.register import model as shim_model
            shim_model.call_hook = self.model_call
        except ImportError:
            pass
        try:
            self.functions = [resolve(self.servable, s, cache) for s in self.stages]
        except Exception as e:
            text = str(e).encode("utf-8", "replace")
            if len(text) > self.size:
                text = text[:self.size]
            self.mv[:len(text)] = text
            self.sock.send(MSG.pack(3, 0, len(text), self.size))
            return False
        self.sock.send(MSG.pack(3, 0, 0, self.size))
        return True

    # ------------------------------------------------------------ inputs
    def value(self, dtype, ndim, off, nbytes, dims):
        if dtype == STRING:
            return bytes(self.mv[off:off + nbytes]).decode("utf-8", "replace")
        if dtype == BYTES:
            return np.frombuffer(self.mm, np.uint8, nbytes, off)
        dt = DTYPES.get(dtype)
        if dt is None:  # bfloat16: numpy has no such type
            raise SystemFailure("an input's data type (ONNX %d) has no numpy equivalent for a Python function" % dtype)
        shape = tuple(dims[:ndim])
        if nbytes == 0:
            return np.zeros(shape, dt)
        return np.frombuffer(self.mm, dt, nbytes // dt.itemsize, off).reshape(shape)

    def read_request(self):
        """The instances as tuples of values; self.passed keeps (array, its record's offset, shape,
        dtype) of each numeric input, so an output that is one of them, as it came, goes back as
        that record: no conversion, no copy."""
        mm = self.mm
        n_inst, n_in, _ = HDR_IN.unpack_from(mm, 0)
        instances = []
        passed = self.passed = []
        at = HDR_IN.size
        for i in range(n_inst):
            values = []
            for k in range(n_in):
                rec = REC.unpack_from(mm, at)
                at += REC.size
                dtype, ndim, off, nbytes = rec[:4]
                dt = DTYPES.get(dtype)
                if dt is not None and nbytes:  # the common case, without value()'s checks
                    v = np.frombuffer(mm, dt, nbytes // dt.itemsize, off).reshape(rec[4:4 + ndim])
                    passed.append((v, at - REC.size, v.shape, dt))
                else:
                    v = self.value(dtype, ndim, off, nbytes, rec[4:])
                values.append(v)
            instances.append(tuple(values))
        return instances

    # ------------------------------------------------------------ calling
    @staticmethod
    def outputs_of(result, stage):
        outs = [] if result is None else list(result) if isinstance(result, (tuple, list)) else [result]
        if len(outs) != stage["n_outputs"]:
            raise SystemFailure(
                "The outputs number %d of one instance returned by function '%s' is not equal to the outputs "
                "number %d  registered in method %s" % (len(outs), stage["key"], stage["n_outputs"], stage["method"]))
        return outs

    def per_instance(self, fn, stage, instances, results):
        for i, args in enumerate(instances):
            try:
                result = fn(*args)
            except Exception as e:
                results[i] = str(e)
                continue
            results[i] = self.outputs_of(result, stage)

    def batched(self, fn, stage, instances, results):
        """MindSpore's groups: at most batch_size per call (0: all); after an exception the failed
        instance is dropped and the function called again on the rest; one before any result fails
        the whole group."""
        pending = list(range(len(instances)))
        size = stage["batch_size"] or len(pending)
        while pending:
            group, rest = pending[:size], pending[size:]
            got = 0
            try:
                for entry in fn(tuple(instances[i] for i in group)):
                    if got == len(group):
                        break
                    results[group[got]] = self.outputs_of(entry, stage)
                    got += 1
            except SystemFailure:
                raise
            except Exception as e:
                if got == 0:
                    for i in group:
                        results[i] = str(e)
                    pending = rest
                else:
                    results[group[got]] = str(e)
                    pending = group[got + 1:] + rest
                continue
            if got < len(group):
                raise SystemFailure(
                    "The number %d of instances returned by function '%s' is not equal to the number %d of "
                    "instances provided to this function." % (got, stage["key"], len(group)))
            pending = rest

    # ------------------------------------------------------------ outputs
    @staticmethod
    def convert(v):
        if type(v) is np.ndarray and v.dtype in CODES and v.ndim <= 8:  # the common case, first
            return CODES[v.dtype], v.ndim, v.shape, np.ascontiguousarray(v).reshape(-1)
        if isinstance(v, (bytes, bytearray)):
            return BYTES, 0, (), bytes(v)
        if isinstance(v, str):
            return STRING, 0, (), v.encode("utf-8")
        if isinstance(v, bool):
            arr = np.array(v, np.bool_)
        elif isinstance(v, int):
            arr = np.array(v, np.int64)
        elif isinstance(v, float):
            arr = np.array(v, np.float64)
        elif hasattr(v, "asnumpy"):
            arr = np.asarray(v.asnumpy())
        else:
            arr = np.asarray(v)
        if arr.dtype not in CODES or arr.ndim > 8:
            raise SystemFailure("Push py task result cause exception: Get illegal result data with type %s"
                                % type(v).__name__ if arr.dtype not in CODES else "more than 8 dims")
        return CODES[arr.dtype], arr.ndim, arr.shape, np.ascontiguousarray(arr).reshape(-1)

    def passed_record(self, v):
        """The request's record of v when v is one of the inputs as it came (else None)."""
        for arr, rec, shape, dt in self.passed:
            if v is arr and v.shape == shape and v.dtype == dt:  # in-place .shape/.dtype changes
                return rec
        return None

    def plan_outputs(self, r, off):
        """One instance's outputs: (converted, offset, nbytes) each, or (None, the input's record
        offset, 0) for an input passed through; and the next free offset."""
        outs = []
        for v in r:
            rec = self.passed_record(v) if self.passed else None
            if rec is not None:
                outs.append((None, rec, 0))
                continue
            conv = self.convert(v)
            nbytes = len(conv[3]) if conv[0] in (STRING, BYTES) else conv[3].nbytes
            outs.append((conv, off, nbytes))
            off = align64(off + nbytes)
        return outs, off

    def write_reply(self, at, results, n_out):
        n_inst = len(results)
        off = align64(at + HDR_OUT.size + INST.size * n_inst + REC.size * n_inst * n_out)
        plan = []  # (message, its offset) or (outputs, None)
        for r in results:
            if isinstance(r, str):
                msg = r.encode("utf-8", "replace")
                plan.append((msg, off))
                off = align64(off + len(msg))
                continue
            outs, off = self.plan_outputs(r, off)
            plan.append((outs, None))
        if off > self.size:
            self.remap(off + off // 2)
        mm, mv = self.mm, self.mv
        HDR_OUT.pack_into(mm, at, 0, n_inst, n_out, 0, 0)
        base = at + HDR_OUT.size
        for i, (item, moff) in enumerate(plan):
            if moff is not None:
                INST.pack_into(mm, base + INST.size * i, 1, len(item), moff)
                mv[moff:moff + len(item)] = item
                continue
            INST.pack_into(mm, base + INST.size * i, 0, 0, 0)
            recs = base + INST.size * n_inst + REC.size * n_out * i
            for k, (conv, doff, nbytes) in enumerate(item):
                rec = recs + REC.size * k
                if conv is None:  # an input passed through: its bytes and record are in the request
                    mv[rec:rec + REC.size] = mv[doff:doff + REC.size]
                    continue
                code, ndim, shape, data = conv
                REC.pack_into(mm, rec, code, ndim, doff, nbytes, *(tuple(shape) + NO_DIMS[ndim:]))
                if nbytes:
                    mv[doff:doff + nbytes] = data if isinstance(data, bytes) else memoryview(data).cast("B")

    def fail_all(self, at, text):
        msg = text.encode("utf-8", "replace")[:65536]
        need = at + HDR_OUT.size + len(msg)
        if need > self.size:
            self.remap(need + need // 2)
        HDR_OUT.pack_into(self.mm, at, 1, 0, 0, len(msg), at + HDR_OUT.size)
        self.mv[at + HDR_OUT.size:at + HDR_OUT.size + len(msg)] = msg

    # ------------------------------------------------------------ Model.call
    def model_call(self, key, instances, subgraph):
        """Model.call: the instances through serve (op 4 / op 5), written past the stage's request
        (where its reply goes later). Returns each instance's outputs as arrays of their own."""
        at = self.free_at
        values = [[self.convert(v) for v in inst] for inst in instances]
        n_in = len(values[0])
        if any(len(v) != n_in for v in values):
            raise RuntimeError("Model(%s).call() failed: inputs format invalid, every instance needs the same "
                               "inputs count" % key)
        off = align64(at + HDR_IN.size + REC.size * len(values) * n_in)
        plan = []
        for inst in values:
            for code, ndim, shape, data in inst:
                nbytes = len(data) if code in (STRING, BYTES) else data.nbytes
                plan.append((code, ndim, shape, data, off, nbytes))
                off = align64(off + nbytes)
        if off > self.size:
            self.remap(off + off // 2)
        HDR_IN.pack_into(self.mm, at, len(values), n_in, declared_index(key))
        for i, (code, ndim, shape, data, doff, nbytes) in enumerate(plan):
            REC.pack_into(self.mm, at + HDR_IN.size + REC.size * i, code, ndim, doff, nbytes,
                          *(list(shape) + [0] * (8 - len(shape))))
            if nbytes:
                self.mv[doff:doff + nbytes] = data if isinstance(data, bytes) else memoryview(data).cast("B")
        self.sock.send(MSG.pack(4, subgraph, at, self.size))
        data = self.sock.recv(MSG.size)
        if len(data) != MSG.size:
            sys.exit(0)
        op, _, reply_at, size = MSG.unpack(data)
        if size > self.size:
            self.remap(size)
        return self.read_model_reply(key, reply_at)

    def read_model_reply(self, key, at):
        status, n_inst, n_out, msg_len, msg_off = HDR_OUT.unpack_from(self.mm, at)
        prefix = "Model(%s).call() failed: " % key
        if status:
            raise RuntimeError(prefix + bytes(self.mv[msg_off:msg_off + msg_len]).decode("utf-8", "replace"))
        results = []
        for i in range(n_inst):
            failed, length, off = INST.unpack_from(self.mm, at + HDR_OUT.size + INST.size * i)
            if failed:
                raise RuntimeError(prefix + bytes(self.mv[off:off + length]).decode("utf-8", "replace"))
            outs = []
            for k in range(n_out):
                rec = at + HDR_OUT.size + INST.size * n_inst + REC.size * (i * n_out + k)
                dtype, ndim, off, nbytes, *dims = REC.unpack_from(self.mm, rec)
                outs.append(np.array(self.value(dtype, ndim, off, nbytes, dims)))  # a copy: the region is reused
            results.append(outs)
        return results

    def call(self, index, request_end):
        stage, fn = self.stages[index], self.functions[index]
        at = align64(request_end)
        self.free_at = at
        try:
            instances = self.read_request()
            results = [None] * len(instances)
            if stage["batch_size"] < 0:
                self.per_instance(fn, stage, instances, results)
            else:
                self.batched(fn, stage, instances, results)
            self.write_reply(at, results, stage["n_outputs"])
        except SystemFailure as e:
            self.fail_all(at, str(e))
        except Exception as e:
            self.fail_all(at, "Push py task result cause exception: %s" % e)
        return at

    def serve(self):
        msg, sock = self.msg, self.sock
        while True:
            if sock.recv_into(msg) != MSG.size:
                return  # serve closed the socket: it stopped or dropped us
            op, index, request_end, size = MSG.unpack_from(msg)
            if size > self.size:
                self.remap(size)
            at = self.call(index, request_end)
            self.passed = []
            sock.send(MSG.pack(2, 0, at, self.size))


def die_with_serve():
    """A runner stuck in a user's function must not outlive serve (PR_SET_PDEATHSIG); a Ctrl+C on
    the terminal is serve's to handle (it drains, then ends the runners), not the runner's."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass
    if os.getppid() == 1:
        sys.exit(0)


def main():
    import json
    die_with_serve()
    servable, stages = sys.argv[1], json.loads(sys.argv[2])
    runner = Runner(servable, stages)
    if runner.start():
        import gc
        gc.freeze()  # what the imports made stays out of every collection from now on
        runner.serve()


if __name__ == "__main__":
    main()
