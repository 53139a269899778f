using System.Runtime.InteropServices;

namespace MLNetFinetune.Distributed;

/// <summary>
/// The dozen functions of Open MPI's C API that data-parallel training and map-only tokenizing need, bound at run time
/// from <c>libmpi.so.40</c> (Debian's <c>openmpi-bin</c>/<c>libopenmpi-dev</c>; <c>MLNETFT_MPI_LIBRARY</c> names another).
/// </summary>
/// <remarks>
/// Written by hand because no served package binds Open MPI: MPI.NET 1.4.0 binds MS-MPI's <c>msmpi.dll</c>, whose handles
/// are integers, while Open MPI's communicators, datatypes and operations are pointers to exported globals
/// (<c>MPI_COMM_WORLD</c> is <c>&amp;ompi_mpi_comm_world</c>), read here with <see cref="NativeLibrary.GetExport"/>.
/// The library is opened with <c>RTLD_GLOBAL</c>, as mpi4py does: Open MPI's plugins (<c>mca_*.so</c>) resolve symbols of
/// <c>libmpi</c> when they are loaded and fail with "undefined symbol" against a library opened locally.
/// </remarks>
static unsafe class Mpi
{
    const int RtldNow = 2, RtldGlobal = 0x100;
    const int ThreadSerialized = 2; // Open MPI's MPI_THREAD_SERIALIZED: any thread may call, one at a time
    static readonly nint InPlace = 1; // Open MPI's MPI_IN_PLACE, ((void *) 1)

    [DllImport("libc.so.6", EntryPoint = "dlopen")]
    static extern nint DlOpen([MarshalAs(UnmanagedType.LPUTF8Str)] string file, int mode);

    [DllImport("libc.so.6", EntryPoint = "dlerror")]
    static extern nint DlError();

    static readonly Lazy<Api> Loaded = new(Load);

    /// <summary>The bound API; throws a message saying what to install when Open MPI is missing.</summary>
    public static Api Functions => Loaded.Value;

    /// <summary>The library file and function pointers, once loaded.</summary>
    public sealed class Api
    {
        public required string Library { get; init; }
        public required nint CommWorld, Float, Double, Int64, Byte, Sum;
        public required delegate* unmanaged<int*, byte***, int, int*, int> InitThread;
        public required delegate* unmanaged<int*, int> Initialized;
        public required delegate* unmanaged<int*, int> Finalized;
        public required delegate* unmanaged<int> Finalize;
        public required delegate* unmanaged<nint, int*, int> CommRank;
        public required delegate* unmanaged<nint, int*, int> CommSize;
        public required delegate* unmanaged<nint, nint, int, nint, nint, nint, int> Allreduce;
        public required delegate* unmanaged<nint, int, nint, int, nint, int> Bcast;
        public required delegate* unmanaged<nint, int> Barrier;
        public required delegate* unmanaged<nint, int, int> Abort;
        public required delegate* unmanaged<int*, int*, int> GetVersion;

        /// <summary>Open MPI's <c>MPI_IN_PLACE</c>.</summary>
        public nint InPlaceBuffer => InPlace;
    }

    static Api Load()
    {
        string name = Environment.GetEnvironmentVariable("MLNETFT_MPI_LIBRARY") is { Length: > 0 } custom ? custom : "libmpi.so.40";
        nint handle;
        try
        {
            // Called once first: binding the dlerror stub makes the runtime call dlerror itself, which would consume the
            // message of a failed dlopen before we read it.
            DlError();
            handle = DlOpen(name, RtldNow | RtldGlobal);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            throw new PlatformNotSupportedException($"MPI needs glibc's dlopen (Linux); {e.Message}", e);
        }
        if (handle == 0)
        {
            string why = Marshal.PtrToStringUTF8(DlError()) ?? "not found";
            throw new DllNotFoundException($"Open MPI's library '{name}' could not be loaded ({why}). Install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev), " +
                "or set MLNETFT_MPI_LIBRARY to the path of libmpi.so.");
        }
        nint Export(string symbol) => NativeLibrary.TryGetExport(handle, symbol, out var address) ? address
            : throw new EntryPointNotFoundException($"'{name}' does not export {symbol}: it is not Open MPI (MPICH and MS-MPI use integer handles, which this binding does not read). " +
                "Point MLNETFT_MPI_LIBRARY at Open MPI's libmpi.so.40.");
        return new Api
        {
            Library = name,
            CommWorld = Export("ompi_mpi_comm_world"),
            Float = Export("ompi_mpi_float"),
            Double = Export("ompi_mpi_double"),
            Int64 = Export("ompi_mpi_int64_t"),
            Byte = Export("ompi_mpi_byte"),
            Sum = Export("ompi_mpi_op_sum"),
            InitThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Export("MPI_Init_thread"),
            Initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized"),
            Finalized = (delegate* unmanaged<int*, int>)Export("MPI_Finalized"),
            Finalize = (delegate* unmanaged<int>)Export("MPI_Finalize"),
            CommRank = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_rank"),
            CommSize = (delegate* unmanaged<nint, int*, int>)Export("MPI_Comm_size"),
            Allreduce = (delegate* unmanaged<nint, nint, int, nint, nint, nint, int>)Export("MPI_Allreduce"),
            Bcast = (delegate* unmanaged<nint, int, nint, int, nint, int>)Export("MPI_Bcast"),
            Barrier = (delegate* unmanaged<nint, int>)Export("MPI_Barrier"),
            Abort = (delegate* unmanaged<nint, int, int>)Export("MPI_Abort"),
            GetVersion = (delegate* unmanaged<int*, int*, int>)Export("MPI_Get_version"),
        };
    }

    /// <summary>Initialises MPI once per process (thread level serialized) unless something else already did.</summary>
    public static void Initialize()
    {
        var api = Functions;
        int flag;
        Check(api.Initialized(&flag), "MPI_Initialized");
        if (flag != 0) return;
        int provided;
        Check(api.InitThread(null, null, ThreadSerialized, &provided), "MPI_Init_thread");
        if (provided < ThreadSerialized)
            throw new InvalidOperationException($"{api.Library} gives thread level {provided}; training calls MPI from more than one thread (one at a time) and needs MPI_THREAD_SERIALIZED.");
    }

    /// <summary>Finalises MPI if it was initialised and not yet finalised.</summary>
    public static void FinalizeOnce()
    {
        if (!Loaded.IsValueCreated) return;
        var api = Functions;
        int initialized, finalized;
        Check(api.Initialized(&initialized), "MPI_Initialized");
        Check(api.Finalized(&finalized), "MPI_Finalized");
        if (initialized != 0 && finalized == 0) Check(api.Finalize(), "MPI_Finalize");
    }

    // MPI's default error handler aborts the job, so a non-zero return is rare; it still gets a message of its own.
    public static void Check(int code, string function)
    {
        if (code != 0) throw new InvalidOperationException($"{function} failed with MPI error code {code}.");
    }
}
