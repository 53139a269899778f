using System.Text;
using System.Text.Unicode;

namespace MLNetFinetune.Data;

/// <summary>
/// Streams the lines of a UTF-8 file through one reusable buffer, so memory stays flat however large the file:
/// the buffer grows only to the longest line, and a line over the limit fails before it is held whole.
/// Each line is checked to be valid UTF-8 (with the byte offset of the first bad byte when it is not).
/// A leading byte-order mark and the <c>\r</c> of CRLF endings are dropped.
/// </summary>
internal sealed class Utf8LineReader : IDisposable
{
    readonly Stream _stream;
    readonly string _path;
    readonly int _maxLineBytes;
    byte[] _buffer;
    int _start, _end, _scanned;
    bool _eof;
    long _bufferOffset; // file offset of _buffer[0]

    public Utf8LineReader(Stream stream, string path, int maxLineBytes, int initialBufferBytes = 1 << 20)
    {
        _stream = stream;
        _path = path;
        _maxLineBytes = maxLineBytes;
        _buffer = new byte[(int)Math.Min(initialBufferBytes, (long)maxLineBytes + 1)];
    }

    /// <summary>1-based number of the line last returned.</summary>
    public long LineNumber { get; private set; }

    /// <summary>File offset of the first byte of the line last returned.</summary>
    public long LineOffset { get; private set; }

    /// <summary>Bytes consumed so far (decompressed).</summary>
    public long BytesRead => _bufferOffset + _start;

    /// <summary>Next line without its terminator; false at the end of the file. The span is valid until the next call.</summary>
    public bool TryReadLine(out ReadOnlySpan<byte> line)
    {
        while (true)
        {
            int newline = _buffer.AsSpan(_scanned, _end - _scanned).IndexOf((byte)'\n');
            if (newline >= 0)
            {
                int lineEnd = _scanned + newline;
                line = Take(lineEnd, lineEnd + 1);
                return true;
            }
            _scanned = _end;
            if (_end - _start > (long)_maxLineBytes + 1) throw TooLong(); // + 1: room for the \r of a CRLF ending
            if (_eof)
            {
                if (_start == _end) { line = default; return false; }
                line = Take(_end, _end);
                return true;
            }
            Fill();
        }
    }

    ReadOnlySpan<byte> Take(int lineEnd, int next)
    {
        if (lineEnd - _start > _maxLineBytes + (lineEnd > _start && _buffer[lineEnd - 1] == (byte)'\r' ? 1 : 0)) throw TooLong();
        LineNumber++;
        LineOffset = _bufferOffset + _start;
        var line = _buffer.AsSpan(_start, lineEnd - _start);
        _start = _scanned = next;
        if (LineNumber == 1 && line.StartsWith(Encoding.UTF8.Preamble)) { line = line[3..]; LineOffset += 3; }
        if (!line.IsEmpty && line[^1] == (byte)'\r') line = line[..^1];
        if (!Utf8.IsValid(line))
        {
            long offset = LineOffset + FirstInvalidByte(line);
            throw new DataFileException(_path, LineNumber, $"invalid UTF-8 at byte offset {offset}", byteOffset: offset);
        }
        return line;
    }

    void Fill()
    {
        if (_start > 0)
        {
            // Slide the partial line to the front; the buffer grows only when one line fills it.
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _bufferOffset += _start;
            _scanned -= _start;
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
        {
            int grown = (int)Math.Min(Math.Min((long)_buffer.Length * 2, (long)_maxLineBytes + 2), Array.MaxLength);
            if (grown <= _buffer.Length) throw TooLong();
            Array.Resize(ref _buffer, grown);
        }
        int read;
        try
        {
            read = _stream.Read(_buffer, _end, _buffer.Length - _end);
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or ZstdSharp.ZstdException)
        {
            // A .gz or .zst cut short (an interrupted download) or damaged: say which file, not only what the decompressor says.
            long offset = _bufferOffset + _end;
            throw new DataFileException(_path, 0,
                $"compressed data ends early or is corrupt (truncated file?) after {offset:N0} decompressed bytes: {e.Message.TrimEnd('.')}", byteOffset: offset, inner: e);
        }
        if (read == 0) _eof = true;
        _end += read;
    }

    DataFileException TooLong() => new(_path, LineNumber + 1,
        $"line is longer than the limit of {_maxLineBytes:N0} bytes (raise MaxRecordBytes if this is intended)",
        byteOffset: _bufferOffset + _start);

    /// <summary>True for a line of spaces, tabs and other ASCII whitespace only (a separator, not a record).</summary>
    public static bool IsBlank(ReadOnlySpan<byte> line) => line.IndexOfAnyExcept(" \t\r\f\v"u8) < 0;

    internal static int FirstInvalidByte(ReadOnlySpan<byte> utf8)
    {
        int i = 0;
        while (i < utf8.Length)
        {
            if (Rune.DecodeFromUtf8(utf8[i..], out _, out int consumed) != System.Buffers.OperationStatus.Done) return i;
            i += consumed;
        }
        return -1;
    }

    public void Dispose() => _stream.Dispose();
}
