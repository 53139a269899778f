using Google.Protobuf;
using Onnx;

namespace MLNetFinetune.Export;

/// <summary>A thin helper over OnnxSharp's generated protobuf classes: add nodes, constants and initializers by name.</summary>
internal sealed class OnnxGraphBuilder
{
    int _next;

    public GraphProto Graph { get; } = new();

    /// <summary>Adds a node and returns the name of its (first) output.</summary>
    public string Node(string op, IEnumerable<string> inputs, params AttributeProto[] attributes) => Nodes(op, inputs, 1, attributes)[0];

    /// <summary>Adds a node of ONNX Runtime's contrib operators (domain <c>com.microsoft</c>) and returns its output.</summary>
    public string MicrosoftNode(string op, IEnumerable<string> inputs, params AttributeProto[] attributes)
    {
        string output = Node(op, inputs, attributes);
        Graph.Node[^1].Domain = MicrosoftDomain;
        return output;
    }

    /// <summary>The domain of ONNX Runtime's contrib operators (MatMulNBits, GatherBlockQuantized).</summary>
    public const string MicrosoftDomain = "com.microsoft";

    /// <summary>Adds a node with several outputs.</summary>
    public string[] Nodes(string op, IEnumerable<string> inputs, int outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = $"{op}_{_next}" };
        node.Input.AddRange(inputs);
        var names = Enumerable.Range(0, outputs).Select(i => $"{op.ToLowerInvariant()}_{_next}_{i}").ToArray();
        _next++;
        node.Output.AddRange(names);
        node.Attribute.AddRange(attributes);
        Graph.Node.Add(node);
        return names;
    }

    /// <summary>
    /// Makes a node's output a graph output named <paramref name="name"/> and returns that name: the producing node's
    /// output is renamed (and so are its consumers' inputs). An Identity node would do the same, but ONNX Runtime keeps
    /// Identity nodes in front of graph outputs and copies the tensor: the whole KV cache again on every step.
    /// </summary>
    public string Output(string value, string name, TensorProto.Types.DataType type, params string[] dims)
    {
        var producer = Graph.Node.LastOrDefault(n => n.Output.Contains(value)) ?? throw new InvalidOperationException($"No node makes '{value}'.");
        producer.Output[producer.Output.IndexOf(value)] = name;
        foreach (var node in Graph.Node)
            for (int i = 0; i < node.Input.Count; i++)
                if (node.Input[i] == value) node.Input[i] = name;
        Graph.Output.Add(ValueInfo(name, type, dims));
        return name;
    }

    public void Input(string name, TensorProto.Types.DataType type, params string[] dims) => Graph.Input.Add(ValueInfo(name, type, dims));

    /// <summary>A constant tensor (small: shapes, scalars, axes) as an initializer.</summary>
    public string Constant(long[] values, long[]? dims = null)
    {
        var t = new TensorProto { Name = $"const_{_next++}", DataType = (int)TensorProto.Types.DataType.Int64 };
        t.Dims.AddRange(dims ?? [values.Length]);
        t.Int64Data.AddRange(values);
        Graph.Initializer.Add(t);
        return t.Name;
    }

    /// <summary>The floating-point type of the graph's activations and weights (float32, or float16 for GPUs).</summary>
    public TensorProto.Types.DataType FloatType { get; init; } = TensorProto.Types.DataType.Float;

    /// <summary>A scalar of the graph's float type.</summary>
    public string Scalar(float value) => Scalar(value, FloatType);

    /// <summary>A scalar of the given float type.</summary>
    public string Scalar(float value, TensorProto.Types.DataType type)
    {
        var t = new TensorProto { Name = $"const_{_next++}", DataType = (int)type };
        if (type == TensorProto.Types.DataType.Float16) t.RawData = ByteString.CopyFrom(BitConverter.GetBytes((Half)value));
        else t.FloatData.Add(value);
        Graph.Initializer.Add(t);
        return t.Name;
    }

    /// <summary>
    /// A weight as an initializer in the graph's float type (float16 rounds to nearest): raw little-endian bytes inline,
    /// or a reference into an external data file.
    /// </summary>
    public string Weight(string name, long[] dims, float[] values, ExternalData? external) => Weight(name, dims, values, external, FloatType);

    /// <summary>A weight in the given float type.</summary>
    public string Weight(string name, long[] dims, float[] values, ExternalData? external, TensorProto.Types.DataType type)
    {
        byte[] bytes = type == TensorProto.Types.DataType.Float16
            ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.Select(v => (Half)v).ToArray().AsSpan()).ToArray()
            : System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        return Initializer(name, dims, type, bytes, external);
    }

    /// <summary>A uint8 initializer (quantized weights, packed zero points).</summary>
    public string Bytes(string name, long[] dims, byte[] values, ExternalData? external) => Initializer(name, dims, TensorProto.Types.DataType.Uint8, values, external);

    string Initializer(string name, long[] dims, TensorProto.Types.DataType type, byte[] bytes, ExternalData? external)
    {
        var t = new TensorProto { Name = name, DataType = (int)type };
        t.Dims.AddRange(dims);
        if (external == null) t.RawData = ByteString.CopyFrom(bytes);
        else
        {
            long offset = external.Append(bytes);
            t.DataLocation = TensorProto.Types.DataLocation.External;
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = external.FileName });
            t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString() });
            t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = bytes.Length.ToString() });
        }
        Graph.Initializer.Add(t);
        return name;
    }

    public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, string[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (string d in dims)
            shape.Dim.Add(long.TryParse(d, out long v) ? new TensorShapeProto.Types.Dimension { DimValue = v } : new TensorShapeProto.Types.Dimension { DimParam = d });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }

    /// <summary>Weights written beside the model when it would pass protobuf's 2 GB limit.</summary>
    internal sealed class ExternalData(string path, string fileName) : IDisposable
    {
        readonly FileStream _file = new(path, FileMode.Create, FileAccess.Write);

        /// <summary>The name the graph refers to (the file is renamed to it once complete).</summary>
        public string FileName { get; } = fileName;

        public long Append(byte[] bytes)
        {
            long offset = _file.Position;
            _file.Write(bytes);
            return offset;
        }

        public void Dispose() => _file.Dispose();
    }
}
