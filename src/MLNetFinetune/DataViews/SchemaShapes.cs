using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNetFinetune.DataViews;

/// <summary>
/// Builds <see cref="SchemaShape"/>s for estimators' <c>GetOutputSchema</c>. ML.NET made the constructor of
/// <see cref="SchemaShape.Column"/> internal, so the one way for an external estimator to promise a column is
/// that constructor, reached by reflection (checked once, with a clear error if a future ML.NET changes it).
/// </summary>
public static class SchemaShapes
{
    static readonly ConstructorInfo ColumnConstructor =
        typeof(SchemaShape.Column).GetConstructor(BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public, null,
            [typeof(string), typeof(SchemaShape.Column.VectorKind), typeof(DataViewType), typeof(bool), typeof(SchemaShape)], null)
        ?? throw new MissingMethodException("This ML.NET version has no SchemaShape.Column(name, kind, itemType, isKey, annotations) constructor.");

    /// <summary>A column promise: name, vector kind and item type, no annotations.</summary>
    public static SchemaShape.Column Column(string name, SchemaShape.Column.VectorKind kind, DataViewType itemType) =>
        (SchemaShape.Column)ColumnConstructor.Invoke([name, kind, itemType, false, new SchemaShape([])]);

    /// <summary>The shape of a schema's visible columns (ML.NET's own <c>SchemaShape.Create</c> is internal).</summary>
    public static SchemaShape FromSchema(DataViewSchema schema) => new(schema.Where(c => !c.IsHidden).Select(c =>
    {
        var (kind, item) = c.Type is VectorDataViewType v
            ? (v.IsKnownSize ? SchemaShape.Column.VectorKind.Vector : SchemaShape.Column.VectorKind.VariableVector, v.ItemType)
            : (SchemaShape.Column.VectorKind.Scalar, c.Type);
        return (SchemaShape.Column)ColumnConstructor.Invoke([c.Name, kind, item, item is KeyDataViewType, new SchemaShape([])]);
    }));

    /// <summary>The input shape with <paramref name="added"/> appended; an added column replaces an input column of the same name.</summary>
    public static SchemaShape Append(SchemaShape input, params SchemaShape.Column[] added)
    {
        var names = added.Select(c => c.Name).ToHashSet(StringComparer.Ordinal);
        return new SchemaShape(input.Where(c => !names.Contains(c.Name)).Concat(added));
    }

    /// <summary>True when the shape has a scalar text column of that name.</summary>
    public static bool IsTextScalar(this SchemaShape.Column column) =>
        column.Kind == SchemaShape.Column.VectorKind.Scalar && column.ItemType is TextDataViewType;

    /// <summary>Fails unless the shape has a scalar text column <paramref name="name"/>; <paramref name="reader"/> names the stage.</summary>
    public static void RequireText(SchemaShape shape, string name, string reader)
    {
        var column = shape.FirstOrDefault(c => c.Name == name);
        if (column.Name == null)
            throw new ArgumentOutOfRangeException(nameof(shape), $"{reader} reads column '{name}', which the input does not have. Input columns: {Names(shape)}.");
        if (!column.IsTextScalar())
            throw new ArgumentOutOfRangeException(nameof(shape), $"{reader} reads column '{name}', which is {column.ItemType} ({column.Kind}); it must be a text column.");
    }

    /// <summary>Fails unless the schema has a text column <paramref name="name"/>; <paramref name="reader"/> names the stage.</summary>
    public static void RequireText(DataViewSchema schema, string name, string reader)
    {
        var column = schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(nameof(schema),
            $"{reader} reads column '{name}', which the input does not have. Input columns: {Names(schema)}.");
        if (column.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(schema), $"{reader} reads column '{name}', which is {column.Type}; it must be a text column.");
    }

    /// <summary>The column names of a shape, for error messages.</summary>
    public static string Names(SchemaShape shape) => string.Join(", ", shape.Select(c => $"'{c.Name}'"));

    /// <summary>The visible column names of a schema, for error messages.</summary>
    public static string Names(DataViewSchema schema) => string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}'"));
}
