import { test } from 'node:test'
import assert from 'node:assert/strict'
import { MAX_ROOM_NAME_BYTES, isValidRoomName, roomFromPath } from '../protocol/index.js'

test('the room is the percent-decoded path after the first slash', () => {
  assert.equal(roomFromPath('/my-room'), 'my-room')
  assert.equal(roomFromPath('/my%20room'), 'my room')
  assert.equal(roomFromPath('/a+b'), 'a+b')
  assert.equal(roomFromPath('/%E2%9C%93'), '✓')
  assert.equal(roomFromPath('/100%25'), '100%')
})

test('further slashes belong to the room, encoded or not', () => {
  assert.equal(roomFromPath('/a/b'), 'a/b')
  assert.equal(roomFromPath('/a%2Fb'), 'a/b')
  assert.equal(roomFromPath('//a'), '/a')
  assert.equal(roomFromPath('/a/'), 'a/')
})

test('empty rooms and paths without a leading slash are invalid', () => {
  assert.equal(roomFromPath('/'), null)
  assert.equal(roomFromPath(''), null)
  assert.equal(roomFromPath('room'), null)
  assert.equal(isValidRoomName(''), false)
})

test('bad percent-encoding is invalid', () => {
  for (const path of ['/%', '/%2', '/%zz', '/a%2', '/%FF', '/%C3', '/%C3%28', '/%ED%A0%80', '/%E2%9C']) {
    assert.equal(roomFromPath(path), null, path)
  }
})

test('512 UTF-8 bytes are allowed, 513 are not', () => {
  assert.equal(MAX_ROOM_NAME_BYTES, 512)
  const ascii = 'a'.repeat(512)
  assert.equal(roomFromPath('/' + ascii), ascii)
  assert.equal(roomFromPath('/' + ascii + 'a'), null)
  // Counted in bytes, not characters: 256 two-byte letters fit, one more byte does not.
  const twoByte = 'é'.repeat(256)
  assert.equal(isValidRoomName(twoByte), true)
  assert.equal(isValidRoomName(twoByte + 'a'), false)
  assert.equal(roomFromPath('/' + encodeURIComponent(twoByte)), twoByte)
  // 128 four-byte emoji are 512 bytes although their UTF-16 length is 256.
  const emoji = '😀'.repeat(128)
  assert.equal(isValidRoomName(emoji), true)
  assert.equal(isValidRoomName(emoji + 'a'), false)
  assert.equal(isValidRoomName('€'.repeat(170) + 'ab'), true) // 512 bytes
  assert.equal(isValidRoomName('€'.repeat(171)), false) // 513 bytes
})

test('control characters are invalid, decoded or literal', () => {
  for (const code of [0x00, 0x01, 0x09, 0x0a, 0x0d, 0x1f, 0x7f, 0x80, 0x85, 0x9f]) {
    const char = String.fromCharCode(code)
    assert.equal(isValidRoomName(`a${char}b`), false, `U+${code.toString(16)}`)
    assert.equal(roomFromPath('/a' + encodeURIComponent(char)), null, `U+${code.toString(16)} encoded`)
  }
  assert.equal(isValidRoomName('a\u00a0b'), true) // U+00A0 is past the C1 block
  assert.equal(isValidRoomName(' '), true)
})

test('unicode names are valid, lone surrogates are not', () => {
  assert.equal(isValidRoomName('日本語の部屋'), true)
  assert.equal(isValidRoomName('emoji 😀'), true)
  assert.equal(roomFromPath('/' + encodeURIComponent('日本語/😀')), '日本語/😀')
  assert.equal(isValidRoomName('a\ud800'), false)
  assert.equal(isValidRoomName('\udc00a'), false)
  assert.equal(isValidRoomName('\ude00\ud83d'), false)
  assert.equal(roomFromPath('/a\ud800b'), null)
})
